"""Issue 12 on the browser pages (Django test client; the real-Chromium run is in tests/test_web.py):
the live request page's parts, cancel buttons, and what comes after the image (download, re-run, vary,
edit, the parameter list). Owner-only throughout."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

from tests.helpers import make_request
from webapp.ledger.models import GenerationRequest, Status

pytestmark = pytest.mark.django_db


def hidden_inputs(html: str, form_id: str) -> dict[str, str]:
    form = re.search(rf'<form[^>]*id="{form_id}".*?</form>', html, re.S).group(0)
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
    fields.pop("csrfmiddlewaretoken", None)
    return fields


def succeeded(owner, **fields):
    values = dict(
        prompt="a glass castle",
        negative_prompt="fog",
        seed=77,
        steps=20,
        guidance_scale=6.5,
        status=Status.SUCCEEDED,
        finished_at=timezone.now(),
        k_served=0,
        image="images/x.png",
        thumbnail="thumbs/x.png",
        model_label="tiny random model",
    )
    values.update(fields)
    return make_request(owner, **values)


def test_request_page_has_live_parts_and_a_cancel_button_while_active(client, user):
    client.force_login(user)
    row = make_request(user, prompt="still waiting")
    html = client.get(row.get_absolute_url()).content.decode()
    for part in ('id="progress"', 'id="queue"', 'id="elapsed"', 'id="eta"', 'aria-live="polite"'):
        assert part in html, part
    assert f'data-events="/api/v1/generations/{row.id}/events/"' in html
    assert re.search(r'<form[^>]*id="cancel-form"(?![^>]*hidden)', html)
    assert re.search(r'<div id="actions"[^>]*hidden', html)  # nothing to download yet


def test_after_the_image_download_rerun_vary_edit_and_the_parameters(client, user):
    client.force_login(user)
    row = succeeded(user)
    html = client.get(row.get_absolute_url()).content.decode()
    assert f'href="/api/v1/generations/{row.id}/image/" download="{row.id}.png"' in html
    assert re.search(r'<form[^>]*id="cancel-form"[^>]*hidden', html)
    rerun = hidden_inputs(html, "rerun-form")
    assert rerun == {
        "prompt": "a glass castle",
        "negative_prompt": "fog",
        "seed": "77",
        "width": "64",
        "height": "64",
        "steps": "20",
        "guidance_scale": "6.5",
        "priority": "interactive",
    }
    vary = hidden_inputs(html, "vary-form")
    assert "seed" not in vary and vary["prompt"] == "a glass castle"
    assert f'href="/?from={row.id}"' in html
    for label in ("Negative prompt", "Guidance (CFG)", "Seed", "Model", "Cache reuse"):
        assert f"<dt>{label}</dt>" in html


def test_edit_prefills_the_form_with_own_requests_only(client, user, other_user):
    client.force_login(user)
    mine = succeeded(user)
    html = client.get(f"/?from={mine.id}").content.decode()
    assert ">a glass castle</textarea>" in html and 'value="fog"' in html
    assert 'name="seed" type="number" min="0" value="77"' in html and 'value="6.5"' in html
    theirs = succeeded(other_user, prompt="bob's secret")
    html = client.get(f"/?from={theirs.id}").content.decode()
    assert "bob&#x27;s secret" not in html and "bob's secret" not in html
    assert client.get("/?from=not-a-uuid").status_code == 200


def test_rerun_submits_the_same_parameters_as_a_new_request(client, user, embedded_services):
    client.force_login(user)
    row = succeeded(user)
    fields = hidden_inputs(client.get(row.get_absolute_url()).content.decode(), "rerun-form")
    resp = client.post("/", fields)
    assert resp.status_code == 302
    new = GenerationRequest.objects.exclude(pk=row.pk).get()
    assert (new.prompt, new.negative_prompt, new.seed, new.steps, new.guidance_scale) == (
        "a glass castle",
        "fog",
        77,
        20,
        6.5,
    )


def test_cancel_button_cancels_own_active_requests_and_returns(client, user, other_user):
    client.force_login(user)
    running = make_request(user, status=Status.RUNNING, started_at=timezone.now())
    resp = client.post(f"/requests/{running.id}/cancel/", {"next": "/"})
    assert resp.status_code == 302 and resp["Location"] == "/"
    running.refresh_from_db()
    assert running.status == Status.CANCELLED
    queued = make_request(user)
    resp = client.post(f"/requests/{queued.id}/cancel/", {"next": "https://evil.example/"})
    assert resp["Location"] == queued.get_absolute_url()  # never off-site
    theirs = make_request(other_user)
    assert client.post(f"/requests/{theirs.id}/cancel/").status_code == 404
    assert GenerationRequest.objects.get(pk=theirs.pk).status == Status.QUEUED
    assert client.get(f"/requests/{queued.id}/cancel/").status_code == 405


def test_recent_list_has_thumbnails_placeholders_and_cancel_buttons(client, user):
    client.force_login(user)
    done = succeeded(user)
    waiting = make_request(user, prompt="in line")
    html = client.get("/").content.decode()
    assert f'src="/api/v1/generations/{done.id}/image/?thumbnail=1"' in html
    assert 'class="thumb thumb-empty"' in html
    assert f'action="/requests/{waiting.id}/cancel/"' in html
    assert f'action="/requests/{done.id}/cancel/"' not in html


def test_token_counter_counts_like_submit_does(api, embedded_services):
    from webapp.serving.prompt_tokens import count_tokens

    text = "a watercolor fox in a snowy forest, highly detailed"
    resp = api.post("/api/v1/prompt-tokens/", {"text": text}, format="json")
    assert resp.status_code == 200 and resp.json() == {"tokens": count_tokens(text), "max": 77}
    assert api.post("/api/v1/prompt-tokens/", {"text": "word " * 90}, format="json").json()["tokens"] > 77


def test_form_images_field_submits_n_requests_with_consecutive_seeds(client, user, embedded_services):
    client.force_login(user)
    resp = client.post("/", {"prompt": "three foxes", "seed": "41", "guidance_scale": "5", "count": "3"})
    assert resp.status_code == 302 and resp["Location"] == "/"
    rows = GenerationRequest.objects.order_by("seed")
    assert [(r.prompt, r.seed, r.guidance_scale) for r in rows] == [("three foxes", s, 5.0) for s in (41, 42, 43)]
    html = client.get("/").content.decode()
    assert 'id="token-count"' in html and 'name="count"' in html and 'name="guidance_scale"' in html
