"""Issue 12 in real headless Chromium (Playwright), against a live server and real worker processes:
submit → the progress bar moves (server-sent events) → image → download (a PNG with its parameters) →
re-run → cancel that one while it runs; and every page of ours at 390 × 844 (a phone) is no wider than the
viewport, with the header folded into a menu. Screenshots go to the test's tmp_path (T2I_SCREENSHOT_DIR to
keep them, e.g. for the docs)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import CHROMIUM, serving_config
from webapp.ledger.models import GenerationRequest, Status

# Records every text the progress line shows, so the test can tell that it moved (not only where it ended).
RECORD_PROGRESS = """
window.__progress = [];
window.__previews = [];
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("progress-text");
  if (el) new MutationObserver(() => window.__progress.push(el.textContent))
    .observe(el, {childList: true, characterData: true, subtree: true});
  const preview = document.getElementById("preview");  // the live preview: each one that loads
  if (preview) preview.addEventListener("load", () => window.__previews.push(preview.naturalWidth));
});
"""
STEPS = 300  # long enough on the tiny CPU model to watch it run and to cancel it while it runs

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),  # the live server's thread and real worker processes read rows
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (make browser)"),
]


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("T2I_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_js(page, expression: str, timeout: float) -> None:
    """Poll a JavaScript expression from Python until it is true: page.wait_for_function evaluates its string
    inside the page, which our Content-Security-Policy (no 'unsafe-eval') rightly refuses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true within {timeout} s: {expression}"
        time.sleep(0.2)


def log_in(page, base: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


@pytest.mark.slow
def test_progress_download_rerun_and_cancel_while_running(live_server, user, gpu_workers, browser, shots):
    serving_config(max_steps=STEPS, admission="queue")  # a long run must not be refused or degraded
    context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 1000})
    context.add_init_script(RECORD_PROGRESS)
    page = context.new_page()
    log_in(page, live_server.url)
    page.fill("#prompt", "a paper boat on a pond")
    page.fill("#seed", "11")
    page.fill("#steps", str(STEPS))
    wait_js(page, "/^\\d+ \\/ 77 tokens$/.test(document.getElementById('token-count').textContent)", 60)
    page.press("#prompt", "Control+Enter")  # submits the form
    page.wait_for_url("**/requests/**")
    first_url = page.url

    wait_js(page, "window.__progress.some(t => /^step [1-9]\\d* of /.test(t))", 120)
    wait_js(page, "window.__previews.length > 0", 60)  # the live preview of the latent (8 × 8 for 64 × 64)
    page.screenshot(path=str(shots / "request-running.png"), full_page=True)
    page.wait_for_selector("#image", timeout=180_000)
    assert page.text_content("#status") == "succeeded"
    assert page.evaluate("document.getElementById('progress').value") == 1
    assert page.evaluate("window.__previews").count(8) >= 1 and page.is_hidden("#preview-box")  # gone once done
    assert page.text_content("#timeliness") in ("on time",) or page.text_content("#timeliness").startswith("late by")
    assert "Ran all 300 steps" in page.text_content("#reuse")
    page.screenshot(path=str(shots / "request-finished.png"), full_page=True)

    with page.expect_download() as download:
        page.click("#download")
    png = Path(download.value.path())
    text = Image.open(png).text["parameters"]
    assert text.startswith("a paper boat on a pond\n") and "Seed: 11" in text and f"Steps: {STEPS}" in text

    page.click("#rerun")  # same parameters, a new request
    page.wait_for_url(lambda url: "/requests/" in url and url != first_url)
    wait_js(page, "document.getElementById('status').textContent === 'running'", 120)
    page.click("#cancel")
    wait_js(page, "document.getElementById('status').textContent === 'cancelled'", 60)
    assert page.is_hidden("#cancel-form")
    page.goto(f"{live_server.url}/gallery/")
    wait_js(page, "[...document.images].every(i => i.complete && i.naturalWidth > 0)", 30)
    page.screenshot(path=str(shots / "gallery.png"), full_page=True)
    rows = GenerationRequest.objects.order_by("created_at")
    assert [r.status for r in rows] == [Status.SUCCEEDED, Status.CANCELLED]
    assert rows[1].seed == 11 and rows[1].steps == STEPS and not rows[1].image


def test_every_page_fits_a_390_px_phone_and_the_header_folds_into_a_menu(live_server, user, browser, shots):
    from datetime import timedelta

    from django.utils import timezone

    from tests.helpers import make_request

    row = make_request(user, prompt="a very long prompt " * 6, status=Status.QUEUED)
    now = timezone.now()
    done = make_request(
        user,
        prompt="a late one",
        status=Status.SUCCEEDED,
        created_at=now - timedelta(seconds=40),
        started_at=now - timedelta(seconds=6),
        finished_at=now,
        deadline=now - timedelta(seconds=10),
        k_served=0,
        model_label="tiny random model (noise-like by design)",
    )
    from workers.image_store import save_image

    image, thumbnail = save_image(done.id, Image.linear_gradient("L").resize((64, 64)).convert("RGB"))
    GenerationRequest.objects.filter(pk=done.pk).update(image=image, thumbnail=thumbnail)
    page = browser.new_page(viewport={"width": 390, "height": 844})
    log_in(page, live_server.url)
    pages = ["/", row.get_absolute_url(), done.get_absolute_url(), "/gallery/", "/tokens/", f"/?from={done.id}"]
    for path in pages:
        page.goto(f"{live_server.url}{path}")
        wide = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert wide[0] <= wide[1], (path, wide)
        assert page.is_hidden("#site-nav") and page.is_visible("#menu-toggle"), path
    page.goto(f"{live_server.url}{done.get_absolute_url()}")
    wait_js(page, "document.getElementById('timeliness').textContent.startsWith('late by')", 30)
    page.screenshot(path=str(shots / "phone-request-late.png"), full_page=True)
    page.goto(f"{live_server.url}/")
    page.screenshot(path=str(shots / "phone-home.png"), full_page=True)
    page.click("#menu-toggle")
    assert page.is_visible("#site-nav a[href='/gallery/']")
    page.screenshot(path=str(shots / "phone-menu.png"))
    page.context.close()
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{live_server.url}/accounts/login/")
    wide = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert wide[0] <= wide[1], ("login", wide)
