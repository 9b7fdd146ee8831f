"""Security headers and the Content-Security-Policy of the HTML pages: no inline script anywhere in our
templates, the headers on the pages, and (in headless Chromium) the pages still work under the policy."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from django.conf import settings

from tests.helpers import make_request

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_templates_have_no_inline_script_or_style():
    for path in (ROOT / "templates").rglob("*.html"):
        html = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag, f"{path}: inline <script> (move it to static/)"
        assert "<style" not in html and not re.search(r"\sstyle=", html), f"{path}: inline style (use static/css)"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{path}: inline event handler attribute"
        assert "javascript:" not in html, path


def assert_security_headers(resp, *, inline_styles: bool = False) -> None:
    csp = resp["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval', no nonce needed
    assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'" and directives["base-uri"] == "'self'"
    assert directives["style-src"] == ("'self' 'unsafe-inline'" if inline_styles else "'self'")
    assert resp["X-Content-Type-Options"] == "nosniff"
    assert resp["Referrer-Policy"] == "same-origin"
    assert resp["X-Frame-Options"] == "DENY"


def test_headers_on_the_home_login_and_request_pages(client, user, embedded_services):
    resp = client.get("/accounts/login/")
    assert resp.status_code == 200
    assert_security_headers(resp)
    client.force_login(user)
    row = make_request(user, prompt="a lighthouse at dusk")
    for url in ("/", row.get_absolute_url(), "/gallery/"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert_security_headers(resp)
        html = resp.content.decode()
        assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html)), url
    assert 'src="/static/web/request.js"' in client.get(row.get_absolute_url()).content.decode()


def test_third_party_pages_may_use_inline_styles_never_inline_scripts(client, django_user_model, embedded_services):
    root = django_user_model.objects.create_superuser("root", "r@x.invalid", "pw-root-123")
    client.force_login(root)
    for url in ("/admin/", "/api/docs/"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert_security_headers(resp, inline_styles=True)
    # Swagger UI's start-up code is a script file (drf-spectacular's split view), not inline.
    html = client.get("/api/docs/").content.decode()
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html))
    assert client.get("/api/docs/?script=").status_code == 200


def test_json_answers_carry_nosniff_and_no_csp(api, embedded_services):
    resp = api.get("/api/v1/generations/")
    assert resp["X-Content-Type-Options"] == "nosniff" and "Content-Security-Policy" not in resp


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)  # the live server's thread reads these rows
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (make browser)")
def test_pages_work_in_chromium_without_a_policy_violation(live_server, user, django_user_model):
    """Chromium enforces the policy: every page loads with no CSP violation and no script error, and
    their scripts (now static files) still run."""
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import expect, sync_playwright

    user.is_staff = True  # to see the dashboard
    user.save()
    row = make_request(user, prompt="a lighthouse at dusk")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        page = browser.new_page()
        violations: list[str] = []
        errors: list[str] = []
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.add_init_script(  # injected by the browser, not the page: not subject to the policy
            "document.addEventListener('securitypolicyviolation',"
            " e => (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI));"
        )

        def reported() -> list[str]:
            return violations + page.evaluate("window.__csp || []") + errors

        page.goto(f"{live_server.url}/")
        assert reported() == [], "login page"
        page.fill("#id_username", "alice")
        page.fill("#id_password", "pw-alice-123")
        page.click("button[type=submit]")
        page.wait_for_selector("#generate-form")
        # Styles come from the static stylesheet.
        assert page.evaluate("getComputedStyle(document.querySelector('header')).display") == "flex"
        assert reported() == [], "home page"
        # The request page's script (static/web/request.js) polls the API and fills in the timings.
        page.goto(f"{live_server.url}{row.get_absolute_url()}")
        expect(page.locator("#timings")).to_contain_text("/", timeout=15_000)  # a locator: no eval under the CSP
        assert page.text_content("#status") == "queued"
        assert reported() == [], "request page"
        page.goto(f"{live_server.url}/gallery/")
        assert reported() == [], "gallery"
        # The dashboard's script (static/dashboard/dashboard.js) reads its settings from data-* and refreshes.
        with page.expect_response(lambda r: "/dashboard/data.json" in r.url and r.status == 200, timeout=15_000):
            page.goto(f"{live_server.url}/dashboard/")
        assert reported() == [], "dashboard"
        # Swagger UI renders with its start-up script as a file.
        page.goto(f"{live_server.url}/api/docs/")
        page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
        assert "Prompt-aware" in page.inner_text(".swagger-ui .info .title")
        assert reported() == [], "swagger"
        page.goto(f"{live_server.url}/admin/")
        assert reported() == [], "admin"
        browser.close()
    assert settings.T2I_CSP  # the policy under test is the configured one
