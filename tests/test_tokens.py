"""API tokens stored hashed (django-rest-knox): owners list, create with an expiry and revoke them (API and
page); a revoked or expired token gets 401; the demo token of `make run` and loadgen's token still work."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

TOKENS = "/api/v1/tokens/"
GENERATIONS = "/api/v1/generations/"


def client_for(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


def test_create_returns_the_secret_once_and_stores_only_a_digest(api, user):
    resp = api.post(TOKENS, {"expires_in_days": 7}, format="json")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    secret = body["token"]
    assert secret.startswith("t2i_") and secret.startswith(body["id"]) and len(secret) > 60
    expiry = datetime.fromisoformat(body["expiry"])
    assert abs((expiry - timezone.now() - timedelta(days=7)).total_seconds()) < 60
    # nothing stored can authenticate: the digest column is a SHA-512 of the secret, the key a short prefix
    row = AuthToken.objects.get(token_key=body["id"])
    stored = " ".join(str(v) for v in AuthToken.objects.filter(pk=row.pk).values().get().values())
    assert secret not in stored and row.digest != secret and len(row.token_key) < 20
    assert client_for(secret).get(GENERATIONS).status_code == 200
    # the list shows ids, times and expiries, never a secret
    listed = api.get(TOKENS).json()
    assert body["id"] in [t["id"] for t in listed] and "token" not in listed[0]
    assert secret not in api.get(TOKENS).content.decode()


@pytest.mark.parametrize("days", [0, -1, 366, "soon"])
def test_expiry_must_be_within_bounds(api, days):
    resp = api.post(TOKENS, {"expires_in_days": days}, format="json")
    assert resp.status_code == 400 and "expires_in_days" in resp.json()


def test_default_expiry_is_30_days(api):
    body = api.post(TOKENS, {}, format="json").json()
    expiry = datetime.fromisoformat(body["expiry"])
    assert abs((expiry - timezone.now() - timedelta(days=30)).total_seconds()) < 60


def test_revoked_token_gets_401(api):
    body = api.post(TOKENS, {"expires_in_days": 1}, format="json").json()
    mine = client_for(body["token"])
    assert mine.get(GENERATIONS).status_code == 200
    assert api.delete(f"{TOKENS}{body['id']}/").status_code == 204
    resp = mine.get(GENERATIONS)
    assert resp.status_code == 401 and resp.json()["detail"] == "Invalid token."
    assert body["id"] not in [t["id"] for t in api.get(TOKENS).json()]
    assert api.delete(f"{TOKENS}{body['id']}/").status_code == 404


def test_a_token_can_revoke_itself(user):
    _, secret = AuthToken.objects.create(user=user)
    me = client_for(secret)
    token_id = me.get(TOKENS).json()[0]["id"]
    assert me.delete(f"{TOKENS}{token_id}/").status_code == 204
    assert me.get(TOKENS).status_code == 401


def test_expired_token_gets_401_and_is_not_listed(api, user):
    row, secret = AuthToken.objects.create(user=user, expiry=timedelta(days=1))
    AuthToken.objects.filter(pk=row.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    assert client_for(secret).get(GENERATIONS).status_code == 401
    assert row.token_key not in [t["id"] for t in api.get(TOKENS).json()]


def test_tokens_are_owner_only(api, user, other_user):
    theirs, their_secret = AuthToken.objects.create(user=other_user)
    assert theirs.token_key not in [t["id"] for t in api.get(TOKENS).json()]
    assert api.delete(f"{TOKENS}{theirs.token_key}/").status_code == 404
    assert client_for(their_secret).get(GENERATIONS).status_code == 200  # still alive
    assert len(client_for(their_secret).get(TOKENS).json()) == 1


def test_tokens_need_authentication(client):
    assert client.get(TOKENS).status_code in (401, 403)
    assert client.post(TOKENS, {}, content_type="application/json").status_code in (401, 403)


def test_schema_documents_the_token_endpoints(api):
    paths = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]
    assert "/api/v1/tokens/" in paths and "/api/v1/tokens/{token_id}/" in paths


# --- the page ----------------------------------------------------------------------------------------------


def test_page_creates_shows_the_secret_once_and_revokes(client, user, other_user):
    AuthToken.objects.create(user=other_user)
    client.force_login(user)
    assert client.get("/tokens/").status_code == 200
    resp = client.post("/tokens/", {"expires_in_days": "3"})
    assert resp.status_code == 200 and resp["Cache-Control"] == "no-store"
    row = AuthToken.objects.get(user=user)
    html = resp.content.decode()
    secret = html.split('id="new-token-secret">')[1].split("<")[0]
    assert secret.startswith(row.token_key) and client_for(secret).get(GENERATIONS).status_code == 200
    later = client.get("/tokens/").content.decode()
    assert row.token_key in later and secret not in later  # listed, secret never again
    assert AuthToken.objects.get(user=other_user).token_key not in later
    assert abs((row.expiry - timezone.now() - timedelta(days=3)).total_seconds()) < 60
    assert client.post("/tokens/", {"revoke": row.token_key}).status_code == 302
    assert not AuthToken.objects.filter(user=user).exists()
    assert client_for(secret).get(GENERATIONS).status_code == 401


def test_page_refuses_bad_expiry_and_someone_elses_token(client, user, other_user):
    theirs, _ = AuthToken.objects.create(user=other_user)
    client.force_login(user)
    resp = client.post("/tokens/", {"expires_in_days": "9999"})
    assert resp.status_code == 400 and b"between 1 and 365" in resp.content
    assert client.post("/tokens/", {"revoke": theirs.token_key}).status_code == 400
    assert AuthToken.objects.filter(pk=theirs.pk).exists()


def test_page_requires_login(client):
    resp = client.get("/tokens/")
    assert resp.status_code == 302 and "/accounts/login/" in resp["Location"]


# --- admin -------------------------------------------------------------------------------------------------


def test_admin_lists_tokens_for_superusers_without_secrets(client, user, django_user_model):
    from django.contrib.auth.models import Permission

    row, secret = AuthToken.objects.create(user=user)
    root = django_user_model.objects.create_superuser("root", "r@x.invalid", "pw-root-123")
    client.force_login(root)
    page = client.get("/admin/knox/authtoken/").content.decode()
    assert row.token_key in page and "alice" in page
    assert secret not in page  # nor anything that authenticates: the digest is a one-way hash
    assert client.get("/admin/knox/authtoken/add/").status_code == 403  # owners make their own

    staff = django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="knox"))
    client.force_login(staff)
    assert client.get("/admin/knox/authtoken/").status_code == 403


# --- make run's demo token, loadgen's token, the command -----------------------------------------------------


def test_demo_user_gets_a_working_token_kept_in_a_0600_file(settings, tmp_path):
    settings.DATA_DIR = tmp_path

    def banner_token() -> str:
        out = StringIO()
        call_command("ensure_demo_user", stdout=out)
        return out.getvalue().split("API token: ")[1].strip()

    first = banner_token()
    token_file = tmp_path / "demo-token.txt"
    assert token_file.read_text().strip() == first
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "demo-login.txt").stat().st_mode) == 0o600
    assert client_for(first).get(GENERATIONS).status_code == 200
    assert banner_token() == first and AuthToken.objects.count() == 1  # a second `make run` reuses it

    AuthToken.objects.all().delete()  # revoked (page, API or admin)
    second = banner_token()
    assert second != first and client_for(second).get(GENERATIONS).status_code == 200
    token_file.unlink()  # lost
    third = banner_token()
    assert third != second and token_file.read_text().strip() == third
    assert client_for(third).get(GENERATIONS).status_code == 200


def test_loadgen_makes_a_fresh_expiring_token_for_its_user(user, monkeypatch):
    from webapp.loadgen.cli import RUN_TOKEN_DAYS, resolve_token

    monkeypatch.delenv("T2I_TOKEN", raising=False)
    secret = resolve_token({"user": "alice"})
    assert client_for(secret).get(GENERATIONS).status_code == 200
    row = AuthToken.objects.get(user=user)
    assert abs((row.expiry - timezone.now() - timedelta(days=RUN_TOKEN_DAYS)).total_seconds()) < 60
    assert resolve_token({"user": "alice", "token": "given"}) == "given"


def test_create_api_token_command_prints_a_working_token(user):
    out = StringIO()
    call_command("create_api_token", "alice", "--days", "0", stdout=out)
    secret = out.getvalue().strip()
    assert client_for(secret).get(GENERATIONS).status_code == 200
    assert AuthToken.objects.get(user=user).expiry is None
