"""Issue 12, the request experience on real parts: progress (worker → Redis → API), queue position and ETA,
live updates by server-sent events, cancel while running, and the parameters inside each PNG.

Plain `db` tests unless a real worker process reads the rows (those say so). No wall-clock assertions:
tests wait for conditions."""

from __future__ import annotations

import io
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from PIL import Image

from tests.helpers import make_request, wait_for_status
from webapp.ledger.models import Priority, Status
from webapp.ledger.progress import read_step, write_steps

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations/"
# AUTOMATIC1111's own parser of the last line of `parameters` (modules/infotext_utils.py, re_param_code).
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def wait_until(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout} s")


# --- progress, queue position, ETA -------------------------------------------------------------------


def test_queued_rows_report_their_position_on_their_worker_and_a_growing_eta(api, user, other_user):
    now = timezone.now()
    first = make_request(user, prompt="first", created_at=now - timedelta(seconds=3))
    second = make_request(other_user, prompt="second", created_at=now - timedelta(seconds=2))
    late_batch = make_request(
        user, prompt="batch class", priority=Priority.BATCH, created_at=now - timedelta(seconds=9)
    )
    third = make_request(user, prompt="third", created_at=now - timedelta(seconds=1))
    make_request(user, prompt="other worker", worker=8)

    bodies = {row.prompt: api.get(f"{URL}{row.id}/").json() for row in (first, late_batch, third)}
    # Interactive rows first, by arrival (another owner's row counts: it waits on the same GPU);
    # the batch-class row waits behind every interactive one although it arrived first.
    assert [bodies[p]["queue_position"] for p in ("first", "third", "batch class")] == [1, 3, 4]
    assert api.get(f"{URL}{second.id}/").status_code == 404  # only its own requests, positions among all
    etas = [bodies[p]["eta_seconds"] for p in ("first", "third", "batch class")]
    assert all(e > 0 for e in etas) and etas == sorted(etas) and etas[0] < etas[-1]
    body = bodies["first"]
    assert (body["progress"], body["step"], body["steps_to_run"]) == (0.0, 0, 20)
    assert body["waiting_seconds"] >= 3 and body["generating_seconds"] is None and body["late_by_seconds"] is None
    assert body["reuse_summary"] == "Runs all 20 steps from scratch (no earlier latent reused)."


def test_running_row_progress_counts_only_the_steps_it_runs(api, user):
    started = timezone.now() - timedelta(seconds=2)
    row = make_request(user, status=Status.RUNNING, started_at=started, k_served=5, steps=20, similarity=0.9)
    body = api.get(f"{URL}{row.id}/").json()
    assert (body["progress"], body["step"], body["steps_to_run"], body["queue_position"]) == (0.0, 0, 15, None)
    assert body["eta_seconds"] >= 0 and body["generating_seconds"] >= 2
    assert body["reuse_summary"] == "Reuses 5 of 20 steps from a similar earlier prompt."

    write_steps([row.id], step=11, steps=20, at=time.time())  # the batch is before step 11: 6 of 15 done
    body = api.get(f"{URL}{row.id}/").json()
    assert (body["progress"], body["step"]) == (0.4, 6)
    assert body["eta_seconds"] > 0  # 9 steps left at the batch's own pace


def test_submit_response_stays_cheap_and_a_later_get_has_the_queue_fields(api, embedded_services):
    resp = api.post(URL, {"prompt": "a lighthouse", "seed": 1}, format="json")
    assert resp.status_code == 202
    body = resp.json()
    assert body["progress"] == 0.0 and body["queue_position"] is None and body["eta_seconds"] is None
    again = api.get(body["url"]).json()
    assert again["queue_position"] == 1 and again["eta_seconds"] > 0


def test_late_result_says_by_how_much(api, user):
    now = timezone.now()
    row = make_request(
        user,
        status=Status.SUCCEEDED,
        created_at=now - timedelta(seconds=40),
        started_at=now - timedelta(seconds=10),
        finished_at=now,
        deadline=now - timedelta(seconds=12.5),
        k_served=0,
    )
    body = api.get(f"{URL}{row.id}/").json()
    assert body["on_time"] is False and body["late_by_seconds"] == pytest.approx(12.5, abs=0.01)
    assert (body["waiting_seconds"], body["generating_seconds"]) == (pytest.approx(30), pytest.approx(10))
    assert (body["progress"], body["eta_seconds"]) == (1.0, 0.0)


# --- the worker's step reporter ------------------------------------------------------------------------


def test_step_reporter_writes_the_latest_step_at_most_once_per_interval_and_chains(user, embedded_services):
    from workers.leases import LeaseLost
    from workers.progress import StepReporter

    row = make_request(user)
    seen = []
    started = time.monotonic()
    with StepReporter([row.id], next_hook=lambda i, n: seen.append(i), interval_s=0.2) as reporter:
        for i in range(5000):
            reporter(i, 5000)
    elapsed = time.monotonic() - started
    reporter.flush()
    assert seen == list(range(5000))  # the next hook sees every step
    assert read_step(row.id).step == 4999 and read_step(row.id).steps == 5000
    assert 1 <= reporter.writes <= 2 + elapsed / 0.2  # coalesced, not one write per step

    def lost(i, n):
        raise LeaseLost("gone")

    with pytest.raises(LeaseLost), StepReporter([row.id], next_hook=lost) as reporter:
        reporter(0, 10)


# --- cancel --------------------------------------------------------------------------------------------


def test_cancel_works_for_queued_and_running_rows_only(api, user):
    running = make_request(user, status=Status.RUNNING, started_at=timezone.now())
    resp = api.post(f"{URL}{running.id}/cancel/")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    running.refresh_from_db()
    assert running.finished_at is not None and running.lease_until is None
    done = make_request(user, status=Status.SUCCEEDED, finished_at=timezone.now())
    resp = api.post(f"{URL}{done.id}/cancel/")
    assert resp.status_code == 409 and "queued or running" in resp.json()["detail"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # a real worker process reads these rows
def test_cancelling_a_running_row_drops_it_from_its_batch_and_the_rest_go_on(api, client, user, gpu_workers, settings):
    """Three rows in one batch on worker 0 (800 steps: long enough to cancel mid-run on a fast machine): cancel
    the middle one while it runs. The engine drops it from the batch's tensors at a later step (the worker's log
    says so); it ends `cancelled` with no image and no cache entry; the other two finish, and their PNGs carry
    their parameters. Progress moved meanwhile, and the running rows had a live preview."""
    from webapp.cache.models import CacheEntry
    from webapp.ledger.publishing import publish

    first, drop, last = (
        make_request(user, prompt=p, seed=3, steps=800, worker=0, batch_limit=3)
        for p in ("keep me", "drop me", "keep me too")
    )
    log_path = gpu_workers[0].log_path
    log_before = log_path.stat().st_size
    publish(first.id, 0)
    wait_for_status(drop.id, {Status.RUNNING}, timeout=90)
    wait_until(lambda: (api.get(f"{URL}{drop.id}/").json()["progress"] or 0) > 0, 90, "progress above 0")
    resp = api.post(f"{URL}{drop.id}/cancel/")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    # The live preview of a running row: the worker's PNG of its current latent (64 × 64 image → 8 × 8 latent).
    client.force_login(user)
    preview = wait_until(lambda: _preview_of(client, first.id), 90, "a live preview")
    assert Image.open(io.BytesIO(preview)).size == (8, 8)

    kept = [wait_for_status(r.id, {Status.SUCCEEDED, Status.FAILED}, timeout=240) for r in (first, last)]
    assert [r.status for r in kept] == [Status.SUCCEEDED] * 2, [r.error for r in kept]
    assert all(r.batch_size == 3 for r in kept)  # they ran as one batch

    def worker_log() -> str:
        with log_path.open("rb") as log:
            log.seek(log_before)
            return log.read().decode(errors="replace")

    # The worker logs the drop after recording the others' successes: wait for the line.
    said = f"cancelled while their batch ran, dropped from it, nothing written: {drop.id}"
    text = wait_until(lambda: said in worker_log() and worker_log(), 60, "the worker's log of the drop")
    assert "dropping 1 of 3 items before step" in text  # the engine took it out of the running batch
    drop.refresh_from_db()
    assert drop.status == Status.CANCELLED and not drop.image
    assert not list((Path(settings.MEDIA_ROOT) / "images").glob(f"{drop.id}*"))
    assert not CacheEntry.objects.filter(source_request_id=drop.id).exists()
    assert all(CacheEntry.objects.filter(source_request_id=r.id).exists() for r in kept)

    for row in kept:
        text = Image.open(Path(settings.MEDIA_ROOT) / row.image.name).text["parameters"]
        prompt, last_line = text.split("\n")
        fields = dict(A1111_PARAM.findall(last_line))
        assert prompt == row.prompt
        assert fields["Steps"] == "800" and fields["Seed"] == "3" and fields["Size"] == "64x64"
        assert fields["Sampler"] in ("DDIM", "Euler") and fields["CFG scale"] == "7.5"
        assert fields["Served K"] == "0" and fields["Request id"] == str(row.id) and fields["Model"]


def _preview_of(client, request_id) -> bytes | None:
    resp = client.get(f"/requests/{request_id}/preview.png")
    return resp.content if resp.status_code == 200 else None


@pytest.mark.django_db(transaction=True)  # a real worker process reads these rows
def test_cancelling_every_row_of_a_batch_stops_it_early(api, user, gpu_workers):
    from webapp.ledger.publishing import publish

    row = make_request(user, prompt="stop me", steps=400, worker=1)
    publish(row.id, 1)
    wait_until(lambda: read_step(row.id), 90, "a first reported step")
    assert api.post(f"{URL}{row.id}/cancel/").status_code == 200
    after = make_request(user, prompt="next one", steps=5, worker=1)
    publish(after.id, 1)
    assert wait_for_status(after.id, {Status.SUCCEEDED, Status.FAILED}, timeout=120).status == Status.SUCCEEDED
    assert read_step(row.id).step < 399  # the worker stopped the cancelled batch before its last step
    row.refresh_from_db()
    assert row.status == Status.CANCELLED and not row.image


# --- server-sent events --------------------------------------------------------------------------------


def _events(resp) -> list[dict]:
    import json

    text = b"".join(resp.streaming_content).decode()
    return [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")]


def test_event_stream_sends_the_request_until_it_is_terminal(client, user, monkeypatch):
    from webapp.api import event_stream

    client.force_login(user)
    done = make_request(user, status=Status.SUCCEEDED, k_served=0, finished_at=timezone.now())
    resp = client.get(f"{URL}{done.id}/events/", HTTP_ACCEPT="text/event-stream")
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/event-stream")
    events = _events(resp)
    assert [e["status"] for e in events] == ["succeeded"] and events[0]["progress"] == 1.0

    monkeypatch.setattr(event_stream, "STREAM_S", 0.6)  # a queued row: the stream ends by time, then reconnects
    queued = make_request(user)
    events = _events(client.get(f"{URL}{queued.id}/events/", HTTP_ACCEPT="text/event-stream"))
    assert len(events) >= 2 and all(e["queue_position"] == 1 for e in events)


def test_event_stream_is_owner_only(client, user, other_user):
    row = make_request(user, status=Status.SUCCEEDED, finished_at=timezone.now())
    assert client.get(f"{URL}{row.id}/events/").status_code in (401, 403)
    client.force_login(other_user)
    resp = client.get(f"{URL}{row.id}/events/", HTTP_ACCEPT="text/event-stream")
    assert resp.status_code == 404 and resp["Content-Type"].startswith("application/json")


def test_event_streams_per_process_are_capped_and_slots_come_back(client, user):
    from django.core.signals import request_finished
    from django.db import close_old_connections

    from webapp.api.event_stream import MAX_STREAMS

    client.force_login(user)
    row = make_request(user, status=Status.SUCCEEDED, finished_at=timezone.now())
    url = f"{URL}{row.id}/events/"
    held = [client.get(url, HTTP_ACCEPT="text/event-stream") for _ in range(MAX_STREAMS)]
    refused = client.get(url, HTTP_ACCEPT="text/event-stream")
    assert refused.status_code == 503 and refused["Retry-After"] and "poll" in refused.json()["detail"]
    # What the server does when a stream ends or its client goes away (with the test client's own guard:
    # request_finished must not close the test's database connection).
    request_finished.disconnect(close_old_connections)
    try:
        for resp in held:
            resp.close()
    finally:
        request_finished.connect(close_old_connections)
    assert client.get(url, HTTP_ACCEPT="text/event-stream").status_code == 200


# --- PNG metadata ----------------------------------------------------------------------------------------


def test_png_parameters_follow_the_a1111_layout_and_survive_any_prompt(settings, tmp_path):
    import uuid

    from workers.image_store import ImageParameters, parameters_text, save_image

    settings.MEDIA_ROOT = str(tmp_path)
    rid = uuid.uuid4()
    params = ImageParameters(
        request_id=rid,
        prompt="a fox, in snow — ünïcode ✓",
        negative_prompt="blurry, dark",
        steps=50,
        sampler="euler",
        guidance_scale=7.5,
        seed=42,
        width=512,
        height=768,
        model="my model, v2",
        k_served=25,
        k_star=20,
    )
    text = parameters_text(params)
    prompt, negative, last = text.split("\n")
    assert prompt == params.prompt and negative == "Negative prompt: blurry, dark"
    fields = dict(A1111_PARAM.findall(last))
    assert fields == {
        "Steps": "50",
        "Sampler": "Euler",
        "CFG scale": "7.5",
        "Seed": "42",
        "Size": "512x768",
        "Model": '"my model, v2"',
        "Served K": "25",
        "K star": "20",
        "Request id": str(rid),
    }
    image_name, _ = save_image(rid, Image.new("RGB", (8, 8)), params)
    assert Image.open(tmp_path / image_name).text["parameters"] == text


# --- idempotency: which fields the original body stated ---------------------------------------------------


def test_a_retry_that_leaves_out_a_field_the_original_stated_is_a_422(api, embedded_services):
    """The values alone cannot tell "seed 1 stated" from "seed left out, the server drew 1": the row's record
    of the fields its body stated (`stated_fields`) can."""
    from webapp.ledger.models import GenerationRequest

    first = api.post(URL, {"prompt": "a fox ", "seed": 1, "steps": 20}, format="json", HTTP_IDEMPOTENCY_KEY="d-1")
    assert first.status_code == 202
    for body, field in (
        ({"prompt": "a fox", "steps": 20}, "seed"),  # seed left out: the server would draw a random one
        ({"prompt": "a fox", "seed": 1}, "steps"),  # steps left out, the default is 20 as well
        ({"prompt": "a fox", "seed": 1, "steps": 20, "priority": "interactive"}, "priority"),  # stated only now
    ):
        resp = api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="d-1")
        assert resp.status_code == 422, body
        assert "d-1" in resp.json()["detail"] and f"{field} (stated in one body" in resp.json()["detail"]
    # The same body, normalized as the serializer does (trailing space, key in the body instead): the original.
    for body, header in (
        ({"prompt": "a fox", "seed": 1, "steps": 20}, {"HTTP_IDEMPOTENCY_KEY": "d-1"}),
        ({"prompt": "a fox ", "seed": 1, "steps": 20, "idempotency_key": "d-1", "negative_prompt": ""}, {}),
    ):
        same = api.post(URL, body, format="json", **header)
        assert same.status_code == 202 and same["Idempotent-Replayed"] == "true"
        assert same.json()["id"] == first.json()["id"]
    assert GenerationRequest.objects.count() == 1


def test_a_row_from_before_the_stated_fields_record_is_compared_by_value(api, embedded_services):
    """A row created before the migration has no record (null): a replay is compared value by value."""
    from webapp.ledger.models import GenerationRequest

    first = api.post(URL, {"prompt": "a wolf", "seed": 5}, format="json", HTTP_IDEMPOTENCY_KEY="d-2").json()
    assert GenerationRequest.objects.get(pk=first["id"]).stated_fields == "seed"
    GenerationRequest.objects.filter(pk=first["id"]).update(stated_fields=None)
    resp = api.post(URL, {"prompt": "a wolf"}, format="json", HTTP_IDEMPOTENCY_KEY="d-2")
    assert resp.status_code == 202 and resp.json()["id"] == first["id"]
    resp = api.post(URL, {"prompt": "a wolf", "seed": 6}, format="json", HTTP_IDEMPOTENCY_KEY="d-2")
    assert resp.status_code == 422 and "seed" in resp.json()["detail"]


# --- live preview -----------------------------------------------------------------------------------------


def test_the_reporter_previews_the_latent_at_most_once_per_interval(user, embedded_services):
    """The latent hook copies only when the reporter's thread asks for a preview; the thread writes one PNG per row
    (the rows the engine still runs, by position) with the engine's latent → RGB."""
    import torch

    from webapp.ledger.progress import read_preview
    from workers.progress import StepReporter

    rows = [make_request(user, prompt=p) for p in ("one", "two", "three")]
    to_rgb = lambda z: ((z[:, :3].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    latent = torch.zeros(2, 4, 6, 5)
    with StepReporter([r.id for r in rows], ended=None) as reporter:
        reporter.to_rgb, reporter.preview_interval_s = to_rgb, 3600
        for i in range(200):
            reporter(i, 200)
            reporter.preview(i + 1, latent, [0, 2, 1])  # rows 0 and 2 are in the latent batch, in that order
        wait_until(lambda: reporter.previews == 1, 30, "one preview written")
        for i in range(200, 400):
            reporter(i, 400)
            reporter.preview(i + 1, latent, [0, 2])
        reporter.flush()
    assert reporter.previews == 1  # one an interval (an hour here), however many steps
    for row, expected in zip(rows, (True, False, True)):
        png = read_preview(row.id)
        assert (png is not None) == expected
        if expected:
            assert Image.open(io.BytesIO(png)).size == (5, 6) and Image.open(io.BytesIO(png)).getpixel((0, 0)) == (
                128,
                128,
                128,
            )


def test_the_preview_page_is_owner_only_and_only_while_running(client, user, other_user, embedded_services):
    from webapp.ledger.progress import write_previews

    running = make_request(user, status=Status.RUNNING, started_at=timezone.now())
    done = make_request(user, status=Status.SUCCEEDED, finished_at=timezone.now())
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    write_previews({running.id: buffer.getvalue(), done.id: buffer.getvalue()})
    assert client.get(f"/requests/{running.id}/preview.png").status_code == 302  # to the login page
    client.force_login(other_user)
    assert client.get(f"/requests/{running.id}/preview.png").status_code == 404
    client.force_login(user)
    resp = client.get(f"/requests/{running.id}/preview.png")
    assert resp.status_code == 200 and resp["Content-Type"] == "image/png" and resp["Cache-Control"] == "no-store"
    assert Image.open(io.BytesIO(resp.content)).getpixel((0, 0)) == (10, 20, 30)
    assert client.get(f"/requests/{done.id}/preview.png").status_code == 404  # not running: no preview
    page = client.get(f"/requests/{running.id}/").content.decode()
    assert f'data-src="/requests/{running.id}/preview.png"' in page and 'id="preview-box"' in page


def test_the_engine_previews_its_latent_cheaply(tmp_path):
    """ApproxCEngine.latent_rgb: the linear approximation, one pixel per latent cell, uint8; the latent hook sees
    the batch's latent after each step with the rows' positions."""
    import torch

    from workers.engine import ApproxCEngine, GenItem, load_pipeline
    from workers.tiny_model import build_tiny_pipeline

    engine = ApproxCEngine(load_pipeline(build_tiny_pipeline(tmp_path / "sd", "sd", "ddim"), device="cpu"))
    seen = []
    engine.generate(
        [GenItem("a", seed=1, steps=4), GenItem("b", seed=2, steps=4)],
        on_latent=lambda level, x, positions: seen.append((level, tuple(x.shape), list(positions))),
    )
    assert seen == [(level, (2, 4, 8, 8), [0, 1]) for level in range(1, 5)]
    rgb = engine.latent_rgb(torch.zeros(2, 4, 8, 8))
    assert tuple(rgb.shape) == (2, 8, 8, 3) and str(rgb.dtype) == "torch.uint8" and int(rgb[0, 0, 0, 0]) == 128
    for channels in (8, 2):  # the demo model's 8-channel latent, and a narrower one: still an RGB picture
        assert tuple(engine.latent_rgb(torch.zeros(1, channels, 4, 5)).shape) == (1, 4, 5, 3)
