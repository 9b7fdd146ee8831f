"""Issue 12 in real headless Chromium, part two: the gallery's search, multi-select delete, favourites and the
detail view's ← → keys; every page (the dashboard, the styled 403 and 404 included) no wider than a 390 px phone;
and axe-core on every page: no serious or critical accessibility violation (WCAG 2 A/AA rules, contrast too).

axe-core's JavaScript comes from the pinned pip package axe-playwright-python (its bundled axe.min.js), so the
test needs no network."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import axe_playwright_python
import pytest
from django.utils import timezone
from PIL import Image

from tests.helpers import make_request
from tests.test_request_experience_browser import log_in, pytestmark, shots  # noqa: F401
from webapp.ledger.models import GenerationRequest, Status
from workers.image_store import save_image

AXE_JS = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()
AXE_RUN = "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
SERIOUS = {"serious", "critical"}


def finished(owner, prompt: str, age_minutes: int) -> GenerationRequest:
    now = timezone.now() - timedelta(minutes=age_minutes)
    row = make_request(
        owner, prompt=prompt, status=Status.SUCCEEDED, created_at=now, started_at=now, finished_at=now, worker=None
    )
    image, thumbnail = save_image(row.id, Image.linear_gradient("L").resize((64, 64)).convert("RGB"))
    GenerationRequest.objects.filter(pk=row.pk).update(image=image, thumbnail=thumbnail)
    return row


def serious_violations(page) -> list[str]:
    """axe-core's serious and critical violations of the page as it is now (empty: none)."""
    page.evaluate(AXE_JS)  # evaluated by the browser's devtools protocol: no inline <script>, CSP allows it
    found = page.evaluate(AXE_RUN)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in found["violations"]
        if v["impact"] in SERIOUS
    ]


def fits(page) -> bool:
    wide = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    return wide[0] <= wide[1]


def page_problems(page, base: str, path: str, code: int, where: str) -> list[str]:
    """Open `path` (it must answer `code`): wider than the viewport, and axe-core's serious violations."""
    response = page.goto(f"{base}{path}")
    assert response.status == code, path
    problems = [] if fits(page) else [f"{path} at {where} is wider than the viewport"]
    return problems + [f"{path} at {where}: {v}" for v in serious_violations(page)]


def problems_logged_in(browser, base: str, pages: dict[str, int]) -> list[str]:
    """`page_problems` of every page, logged in, on a phone (390 × 844) and on a laptop (1280 × 900)."""
    problems = []
    for width, height in ((390, 844), (1280, 900)):
        page = browser.new_page(viewport={"width": width, "height": height})
        log_in(page, base)
        for path, code in pages.items():
            problems += page_problems(page, base, path, code, f"{width} px")
        page.context.close()
    return problems


def test_gallery_search_favourite_delete_and_keyboard_walk(live_server, user, browser, shots):  # noqa: F811
    rows = [finished(user, prompt, age) for prompt, age in (("fox one", 30), ("a cat", 20), ("fox two", 10))]
    fox_one, _, fox_two = rows
    finished(user, "fox three", 5)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete the selected requests?"
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/gallery/")
    page.fill("#q", "fox")
    page.click("#search")
    captions = page.locator(".gallery-item figcaption").all_inner_texts()
    assert captions == ["fox three", "fox two", "fox one"]
    # ← → on the detail view walk the search's results, not the whole gallery.
    page.click(f".gallery-item[data-id='{fox_two.id}'] a")
    page.wait_for_url(f"**{fox_two.get_absolute_url()}?*")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"**{fox_one.get_absolute_url()}?*")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**{fox_two.get_absolute_url()}?*")
    page.click("#favourite")
    page.wait_for_selector("#favourite[aria-pressed='true']")
    page.goto(f"{live_server.url}/gallery/?q=fox&status=any")
    page.check(f".gallery-item[data-id='{fox_one.id}'] input[name=ids]")
    page.screenshot(path=str(shots / "gallery-search.png"), full_page=True)
    # Multi-select delete of two of the three foxes.
    page.goto(f"{live_server.url}/gallery/?q=fox")
    page.check(f".gallery-item[data-id='{fox_one.id}'] input[name=ids]")
    page.check(f".gallery-item[data-id='{fox_two.id}'] input[name=ids]")
    page.click("#delete-selected")
    page.wait_for_selector(".messages")
    assert "Deleted 2 requests." in page.inner_text(".messages")
    assert page.locator(".gallery-item figcaption").all_inner_texts() == ["fox three"]
    assert GenerationRequest.objects.filter(deleted_at__isnull=False).count() == 2
    page.goto(f"{live_server.url}/gallery/?status=any")
    assert page.locator(".gallery-item figcaption").all_inner_texts() == ["fox three", "a cat"]


@pytest.mark.slow
def test_every_page_fits_a_phone_and_has_no_serious_accessibility_violation(
    live_server, user, other_user, django_user_model, browser
):
    done = finished(user, "a lighthouse at dusk", 3)
    queued = make_request(user, prompt="waiting in line")
    theirs = finished(other_user, "someone else's", 1)
    user.is_staff = True  # the dashboard is for staff
    user.save()
    pages = {
        "/": 200,
        queued.get_absolute_url(): 200,
        done.get_absolute_url(): 200,
        "/gallery/": 200,
        "/gallery/?status=any&q=light": 200,
        "/tokens/": 200,
        "/dashboard/": 200,
        theirs.get_absolute_url(): 404,  # styled, and says nothing of whose it is
        "/no-such-page/": 404,
    }
    problems = problems_logged_in(browser, live_server.url, pages)
    # Someone who is not staff: the dashboard is the styled 403. And the login page, logged out.
    page = browser.new_page(viewport={"width": 390, "height": 844})
    for path, code in (("/accounts/login/", 200), ("/dashboard/", 403)):
        if code == 403:
            page.fill("#id_username", "bob")
            page.fill("#id_password", "pw-bob-123")
            page.click("button[type=submit]")
            page.wait_for_url(f"{live_server.url}/")
        problems += page_problems(page, live_server.url, path, code, "390 px")
    page.context.close()
    assert problems == [], "\n".join(problems)


@pytest.mark.slow
def test_admin_pages_fit_a_phone_and_have_no_serious_accessibility_violation(live_server, user, browser):
    """The Django admin an operator opens on a phone: the requests' change list and change form, and the serving
    configuration (SLOs, the manual K layout) with the plan history, at 390 px and at 1280 px, under axe-core."""
    from webapp.ledger.models import AllocationPlan, PlanRecordStatus, ServingConfig

    done = finished(user, "a lighthouse at dusk", 3)
    make_request(user, prompt="waiting in line")
    config = ServingConfig.current()
    AllocationPlan.objects.create(
        policy=config.policy, status=PlanRecordStatus.OK, worker_levels=[0, 10], expected_quality=0.9
    )
    user.is_staff = user.is_superuser = True
    user.save()
    pages = (
        "/admin/",
        "/admin/ledger/generationrequest/",
        "/admin/ledger/generationrequest/?status__exact=succeeded&q=light",
        f"/admin/ledger/generationrequest/{done.id}/change/",
        "/admin/ledger/servingconfig/",
        f"/admin/ledger/servingconfig/{config.pk}/change/",
        "/admin/ledger/allocationplan/",
    )
    problems = problems_logged_in(browser, live_server.url, dict.fromkeys(pages, 200))
    assert problems == [], "\n".join(problems)
