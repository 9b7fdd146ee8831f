"""Login protection (django-axes): 20 failed logins lock a username (from any address) or an address (for
any username), on the login page and the admin, with a clear message; an admin unlocks; API tokens and
existing sessions are not affected by axes' authentication backend."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.conf import settings

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"


def attempt(client, username: str, password: str, ip: str = "10.0.0.1", url: str = LOGIN):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_twenty_wrong_passwords_lock_the_account(client, user, api, django_user_model):
    assert settings.AXES_FAILURE_LIMIT == 20
    for i in range(19):  # from 19 addresses: the username is what is counted here
        resp = attempt(client, "alice", "wrong", ip=f"10.0.1.{i}")
        assert resp.status_code == 200 and b"didn't match" in resp.content
    resp = attempt(client, "alice", "wrong", ip="10.0.1.19")  # the 20th
    assert resp.status_code == 429
    page = resp.content.decode()
    assert "Too many failed logins" in page and "after 20 failed attempts" in page
    assert "15 minutes" in page and "administrator" in page

    # now even the right password, from a new address, is refused, on the login page and the admin's
    resp = attempt(client, "alice", "pw-alice-123", ip="10.0.2.1")
    assert resp.status_code == 429 and "_auth_user_id" not in client.session
    resp = attempt(client, "alice", "pw-alice-123", ip="10.0.2.2", url=ADMIN_LOGIN)
    assert resp.status_code == 429 and b"Too many failed logins" in resp.content
    # another user is not locked (another address)
    django_user_model.objects.create_user("carol", password="pw-carol-123")
    assert attempt(client, "carol", "pw-carol-123", ip="10.0.2.3").status_code == 302

    # the API's token auth never goes through axes' backend: alice's token still works
    assert api.get("/api/v1/generations/").status_code == 200

    # an admin unlocks her (Admin › Axes › Access attempts: delete)
    root = django_user_model.objects.create_superuser("root", "r@x.invalid", "pw-root-123")
    admin = client.__class__()
    admin.force_login(root)
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and b"alice" in listing.content
    ids = list(AccessAttempt.objects.filter(username="alice").values_list("pk", flat=True))
    resp = admin.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    assert resp.status_code == 302 and not AccessAttempt.objects.filter(username="alice").exists()
    assert attempt(client, "alice", "pw-alice-123", ip="10.0.2.4").status_code == 302


def test_twenty_failures_from_one_address_lock_that_address(client, user, api):
    for i in range(20):  # 20 usernames, one address
        attempt(client, f"ghost{i}", "wrong", ip="10.9.9.9")
    resp = attempt(client, "alice", "pw-alice-123", ip="10.9.9.9")
    assert resp.status_code == 429 and b"Too many failed logins" in resp.content
    assert attempt(client, "alice", "pw-alice-123", ip="10.9.9.10").status_code == 302  # other address: fine
    # token auth from the locked address is untouched
    assert api.get("/api/v1/generations/", REMOTE_ADDR="10.9.9.9").status_code == 200


def test_a_success_resets_the_count(client, user):
    for _ in range(15):
        attempt(client, "alice", "wrong")
    assert attempt(client, "alice", "pw-alice-123").status_code == 302
    client.logout()
    for _ in range(15):
        assert attempt(client, "alice", "wrong").status_code == 200  # not locked: the count restarted


def test_no_lockout_leaks_between_tests(client, user):
    """Runs after the lockout tests above: their failed attempts were rolled back with them."""
    assert not AccessAttempt.objects.exists()
    assert attempt(client, "alice", "pw-alice-123", ip="10.0.1.1").status_code == 302
