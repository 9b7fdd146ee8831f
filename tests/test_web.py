"""Browser pages: the form, the live request page, the gallery (Django test client), and one
real headless-Chromium run through the whole path."""

from __future__ import annotations

import os

import pytest

from tests.helpers import CHROMIUM, CHROMIUM_ARGS, make_request
from webapp.ledger.models import GenerationRequest, Status

pytestmark = pytest.mark.django_db  # plain: rolled back; the browser test below overrides it


def test_pages_require_login(client, embedded_services):
    for url in ("/", "/gallery/"):
        resp = client.get(url)
        assert resp.status_code == 302 and "/accounts/login/" in resp["Location"]


def test_form_submits_and_redirects_to_request_page(client, user, embedded_services):
    client.force_login(user)
    resp = client.post("/", {"prompt": "a castle made of glass", "seed": "3"})
    assert resp.status_code == 302
    row = GenerationRequest.objects.get()
    assert resp["Location"] == row.get_absolute_url() and row.seed == 3
    page = client.get(resp["Location"])
    assert b"a castle made of glass" in page.content and b"queued" in page.content


def test_form_shows_validation_errors(client, user, embedded_services):
    client.force_login(user)
    resp = client.post("/", {"prompt": "   ", "seed": "-4"})
    assert resp.status_code == 400
    assert b"The prompt is empty" in resp.content and b"Seed must be between" in resp.content
    assert GenerationRequest.objects.count() == 0


def test_request_page_is_owner_only(client, user, other_user, embedded_services):
    client.force_login(user)
    client.post("/", {"prompt": "private"})
    row = GenerationRequest.objects.get()
    client.force_login(other_user)
    assert client.get(row.get_absolute_url()).status_code == 404


def test_gallery_lists_only_own_succeeded_images_newest_first(client, user, other_user, embedded_services):
    from datetime import timedelta

    from django.utils import timezone

    def make(owner, prompt, status, age):
        row = make_request(
            owner,
            prompt=prompt,
            steps=5,
            status=status,
            deadline=timezone.now(),
            model_label="tiny random model",
            worker=None,
        )
        GenerationRequest.objects.filter(pk=row.pk).update(created_at=timezone.now() - age)

    make(user, "older image", Status.SUCCEEDED, timedelta(minutes=5))
    make(user, "newer image", Status.SUCCEEDED, timedelta(minutes=1))
    make(user, "still queued", Status.QUEUED, timedelta(0))
    make(other_user, "someone else's", Status.SUCCEEDED, timedelta(0))
    client.force_login(user)
    html = client.get("/gallery/").content.decode()
    assert "still queued" not in html and "someone else" not in html
    assert html.index("newer image") < html.index("older image")
    assert "tiny random model" in html


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)  # the live server's thread and a real worker process read these rows
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (make browser)")
def test_browser_login_submit_and_see_image(live_server, user, gpu_workers, tmp_path):
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
        )
        page = browser.new_page()
        page.goto(f"{live_server.url}/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "pw-alice-123")
        page.click("button[type=submit]")
        page.fill("#prompt", "a paper boat on a pond")
        page.fill("#seed", "11")
        page.click("#generate-form button[type=submit]")
        page.wait_for_url("**/requests/**")
        # The page updates itself (no reload) until the image appears.
        page.wait_for_selector("#image", timeout=90_000)
        assert page.text_content("#status") == "succeeded"
        assert "tiny random model" in page.inner_text("#model-label")
        loaded = page.evaluate("document.getElementById('image').naturalWidth")
        assert loaded == 64
        page.screenshot(path=str(tmp_path / "request.png"))
        page.goto(f"{live_server.url}/gallery/")
        assert "a paper boat on a pond" in page.content()
        browser.close()
    assert GenerationRequest.objects.get().status == Status.SUCCEEDED


def test_admin_pages_render_for_staff(client, user, django_user_model, embedded_services):
    from webapp.serving import controller

    root = django_user_model.objects.create_superuser("root", "r@x.invalid", "pw-root-123")
    client.force_login(root)
    row = make_request(user, prompt="seen in the admin")
    controller.run_controller()
    for url in (
        "/admin/",
        "/admin/ledger/generationrequest/",
        f"/admin/ledger/generationrequest/{row.pk}/change/",
        "/admin/ledger/servingconfig/",
        "/admin/ledger/allocationplan/",
        "/admin/ledger/batchrecord/",
        "/admin/cache/cacheentry/",
        "/admin/cache/cacheconfig/",
        "/admin/knox/authtoken/",
        "/admin/axes/accessattempt/",
    ):
        assert client.get(url).status_code == 200, url
    assert b"seen in the admin" in client.get(f"/admin/ledger/generationrequest/{row.pk}/change/").content


def test_old_cache_admin_urls_redirect_to_the_cache_app(client):
    """The cache's models moved from the workers app to webapp.cache; bookmarks keep working."""
    resp = client.get("/admin/workers/cacheentry/?q=fox")
    assert resp.status_code == 301 and resp["Location"] == "/admin/cache/cacheentry/?q=fox"
