"""Issue 11: recovery timings from the SLO, heartbeats, the reconciler's re-dispatch and lost-message
repair, results kept after a lost lease, the atomic in-flight cap, admission control and time limits.
Real PostgreSQL and Redis; the GPU slots used here (5–9) have no consumer, so nothing runs by accident."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scheduler.admission import DEGRADE, QUEUE, SHED, admit
from scheduler.interface import ClusterView
from scheduler.profiles import load_profile
from scheduler.recovery import recovery_timings
from tests.helpers import make_request, serving_config, serving_config_admin_form
from webapp.ledger import transitions
from webapp.ledger.models import GenerationRequest, Status
from webapp.ledger.publishing import broker, publish, waiting_request_ids
from webapp.ledger.queues import alive_key, gpu_queue
from webapp.ledger.reconcile import ReconcileContext, reconcile
from webapp.serving.cluster_state import live_workers

SLOTS = (5, 6, 7, 8, 9)


# --- the formula (pure) -------------------------------------------------------------------------------
def test_sdxl_timings_detect_within_a_quarter_slo_and_recover_before_expiry():
    profile = load_profile("sdxl-a100")
    slo = 2 * profile.latency(0, 1)
    caps = profile.batch_caps(slo)
    longest = max(profile.latency(k, caps[k]) for k in profile.levels)
    t = recovery_timings(slo, longest)
    assert t.detection_s <= slo / 4 + 1e-9
    assert t.heartbeat_s < t.lease_s and t.reconcile_s == int(t.reconcile_s) >= 1
    assert t.recoverable and t.recovery_s <= 2 * slo and t.problem() is None


def test_a_batch_longer_than_the_expiry_window_is_not_recoverable():
    t = recovery_timings(slo_s=2.0, longest_batch_s=10.0)
    assert not t.recoverable and "2 × SLO" in t.problem()


def test_admin_refuses_an_slo_that_recovery_cannot_beat(client, django_user_model, settings):
    settings.T2I_PROFILE = "sdxl-a100"
    url, data = serving_config_admin_form(client, django_user_model)
    data.update(slo_seconds="0.5", batch_slo_seconds="5")
    response = client.post(url, data)
    assert response.status_code == 200  # the form again, with the error
    assert "Recovery from a worker crash takes up to" in response.content.decode()


# --- admission (pure) ---------------------------------------------------------------------------------
def _busy_cluster(backlog_s: float) -> ClusterView:
    view = ClusterView.idle([0, 25])
    view.busy_until = [backlog_s, backlog_s]
    view.running = [1, 1]
    return view


def _latency(k: int, b: int) -> float:
    return {0: 4.0, 5: 3.5, 25: 1.0}[k] * b


@pytest.mark.parametrize(
    ("mode", "accept", "k_prime"),
    [(QUEUE, True, 0), (DEGRADE, True, 25), (SHED, False, 0)],
)
def test_admission_modes_on_a_request_that_would_be_late(mode, accept, k_prime):
    verdict = admit(mode, 0.0, 5.0, 0, 0, (5, 25), _busy_cluster(3.0), _latency)
    assert (verdict.accept, verdict.k_prime) == (accept, k_prime)
    if not accept:
        assert verdict.retry_after_s >= 3.0


def test_admission_lets_through_what_can_make_it_and_degrade_refuses_a_miss_it_cannot_speed_up():
    assert admit(SHED, 0.0, 10.0, 0, 0, (), _busy_cluster(3.0), _latency).accept
    assert not admit(DEGRADE, 0.0, 5.0, 0, 0, (), _busy_cluster(3.0), _latency).accept


# --- heartbeats and routing ---------------------------------------------------------------------------
def test_live_workers_follow_the_heartbeat_keys(embedded_services, settings):
    settings.T2I_WORKERS = 10
    r = broker()
    try:
        r.set(alive_key(7), "x", px=60_000)
        r.set(alive_key(8), "x", px=60_000)
        r.delete(alive_key(9))
        live = live_workers()
        assert {7, 8} <= live and 9 not in live
        r.delete(alive_key(7))
        assert 7 not in live_workers()
    finally:
        r.delete(alive_key(7), alive_key(8))


# --- the reconciler -----------------------------------------------------------------------------------
@pytest.fixture
def empty_slots(embedded_services, settings):
    settings.T2I_WORKERS = 10
    r = broker()
    r.delete(*[gpu_queue(s) for s in SLOTS])
    yield
    r.delete(*[gpu_queue(s) for s in SLOTS])


def _context(live=(), republish_s=1.0):
    return ReconcileContext(republish_s=republish_s, live_workers=set(live), planned_levels=[0] * 10)


def test_lost_message_is_republished_and_a_waiting_one_is_not(user, empty_slots, transactional_db):
    old = timezone.now() - timedelta(seconds=30)
    lost = make_request(user, worker=9, published_at=old, publish_count=1)
    waiting = make_request(user, worker=8)
    assert publish(waiting.id, 8)
    GenerationRequest.objects.filter(pk=waiting.pk).update(published_at=old)

    report = reconcile(_context())
    assert report.republished == 1
    assert str(lost.id) in waiting_request_ids([9])
    assert GenerationRequest.objects.get(pk=waiting.pk).publish_count == 1  # not sent twice


def test_queued_rows_of_a_dead_worker_move_to_a_live_one(user, empty_slots, transactional_db):
    orphan = make_request(user, worker=5, k_served=0)
    report = reconcile(_context(live=(6, 7)))
    row = GenerationRequest.objects.get(pk=orphan.pk)
    assert report.moved == 1 and row.worker in (6, 7) and row.status == Status.QUEUED
    assert str(orphan.id) in waiting_request_ids([row.worker])


def test_expired_lease_requeues_and_sends_the_row_to_a_live_worker_at_once(user, empty_slots, transactional_db):
    row = make_request(user, worker=5)
    assert transitions.claim_batch(row.id, worker=5, lease_seconds=-1)  # its worker died: lease already over
    report = reconcile(_context(live=(6,)))
    row.refresh_from_db()
    assert report.requeued == 1 and row.status == Status.QUEUED and row.worker == 6
    assert str(row.id) in waiting_request_ids([6])


def test_a_row_accepted_within_one_slo_is_not_expired_even_if_it_arrived_long_ago(user, empty_slots):
    serving_config(slo_seconds=10, batch_slo_seconds=100)
    long_ago = timezone.now() - timedelta(minutes=5)
    fresh = make_request(user, created_at=long_ago, accepted_at=timezone.now())
    stale = make_request(user, created_at=long_ago, accepted_at=long_ago)
    reconcile(_context())
    assert GenerationRequest.objects.get(pk=fresh.pk).status == Status.QUEUED
    assert GenerationRequest.objects.get(pk=stale.pk).status == Status.EXPIRED


def test_a_result_after_the_lease_was_lost_is_kept(user, db):
    row = make_request(user)
    assert transitions.claim_batch(row.id, worker=9, lease_seconds=-1)
    assert transitions.requeue(row.id, "lease expired")
    assert transitions.succeed(row.id, k_served=0)  # the frozen worker came back with the image
    assert GenerationRequest.objects.get(pk=row.pk).status == Status.SUCCEEDED
    assert not transitions.succeed(row.id, k_served=0)  # a second copy finds it terminal


# --- the in-flight cap under concurrency ----------------------------------------------------------------
def test_concurrent_submits_cannot_pass_the_in_flight_cap(user, empty_slots, transactional_db, settings):
    from webapp.serving.submission import InFlightCapReached, Submission, submit

    serving_config(max_in_flight=20, manual_layout="", default_steps=50, max_steps=1000)
    # The prompts differ by a digit: the probing limit would refuse some, depending on how the threads interleave.
    settings.T2I_PROBE_LIMIT = 0
    barrier = threading.Barrier(25)
    outcomes: list[str] = []

    def post(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            submit(user, Submission(prompt=f"cap test {i}", steps=1000))
            outcomes.append("accepted")
        except InFlightCapReached:
            outcomes.append("capped")
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ended_meanwhile = GenerationRequest.objects.filter(owner=user, finished_at__isnull=False).count()
    accepted = outcomes.count("accepted")
    assert len(outcomes) == 25
    assert 20 <= accepted <= 20 + ended_meanwhile, outcomes


# --- time limits -------------------------------------------------------------------------------------
def test_the_soft_time_limit_interrupts_a_batch_and_the_hard_one_is_disarmed():
    from workers.time_limits import BatchTimedOut, BatchTimeLimit, TimeLimits, limits_for

    assert limits_for(2.0, floor_s=120).soft_s == 120 and limits_for(100.0, floor_s=120).soft_s == 400
    called = []
    with pytest.raises(BatchTimedOut), BatchTimeLimit(TimeLimits(0.2, 600), on_hard=lambda: called.append(1)):
        while True:
            time.sleep(0.01)
    assert called == []


def test_a_frozen_worker_that_lost_its_lease_stops_its_batch_instead_of_generating_twice(user, db):
    from workers.emulated_engine import EmulatedEngine
    from workers.engine import GenItem
    from workers.leases import LeaseKeeper, LeaseLost

    row = make_request(user)
    assert transitions.claim_batch(row.id, worker=9, lease_seconds=60)
    keeper = LeaseKeeper([row.id], 60, worker=9)
    keeper.renew_once()
    assert not keeper.lost.is_set()
    assert transitions.requeue(row.id, "lease expired")  # the reconciler gave up on the frozen worker
    keeper.renew_once()
    assert keeper.lost.is_set()
    steps = []

    def hook(i: int, n: int) -> None:
        steps.append(i)
        keeper.stop_if_lost(i, n)

    engine = EmulatedEngine(load_profile("sdxl-a100"), time_factor=0.01)
    with pytest.raises(LeaseLost):
        engine.generate([GenItem(prompt="x", seed=1, steps=50)], on_step=hook)
    assert steps == [0]


@pytest.mark.django_db(transaction=True)
def test_a_worker_loads_its_engine_before_it_claims_so_no_lease_runs_out_during_the_load(user, monkeypatch):
    """A worker that has just restarted loads its engine on its first message. Claimed first, the row's lease
    would run out during the load (it is renewed only once the batch runs), and the reconciler would take it
    back and count an attempt: what tests/chaos.py saw after every kill."""
    from workers import runtime, tasks
    from workers.emulated_engine import EmulatedEngine

    row = make_request(user, k_served=0)
    during_load = []

    def loading_engine():
        row.refresh_from_db()
        during_load.append((row.status, row.lease_until))
        return EmulatedEngine(load_profile("sdxl-a100"), time_factor=0.001)

    monkeypatch.setenv("T2I_WORKER_INDEX", str(row.worker))
    monkeypatch.setattr(runtime, "engine", loading_engine)
    assert tasks.generate(str(row.id)).startswith("done")
    assert during_load == [(Status.QUEUED, None)]
    row.refresh_from_db()
    assert row.status == Status.SUCCEEDED and row.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_a_gpu_worker_counts_as_live_only_once_its_engine_is_loaded(monkeypatch, settings):
    """While a (re)started worker loads its pipeline it cannot serve: routing must not send it requests and
    the reconciler should move its queued rows, so its heartbeat starts after the load."""
    from workers import runtime, tasks

    settings.T2I_WORKERS = 10
    slot = SLOTS[0]
    key = alive_key(slot)
    broker().delete(key)
    alive_during_load = []

    def loading_engine():
        deadline = time.monotonic() + 2.0  # a heartbeat started beside the load would beat within this
        while broker().get(key) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        alive_during_load.append(broker().get(key) is not None)

    monkeypatch.setenv("T2I_WORKER_INDEX", str(slot))
    monkeypatch.setenv("T2I_PRELOAD_ENGINE", "1")
    monkeypatch.setattr(runtime, "engine", loading_engine)
    heartbeat = tasks._start_gpu_child()
    try:
        deadline = time.monotonic() + 30
        while broker().get(key) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive_during_load == [False]
        assert slot in live_workers()  # and once loaded, it is live
    finally:
        heartbeat.stop()
    assert broker().get(key) is None


def test_an_emulated_batch_paused_mid_run_does_not_race_through_its_remaining_steps():
    """A frozen worker that resumes must give its lease keeper a step to stop the batch (tests/chaos.py's
    worker_freeze): a GPU runs the remaining steps at their pace, it does not catch up the time lost."""
    from workers.emulated_engine import EmulatedEngine
    from workers.engine import GenItem

    engine = EmulatedEngine(load_profile("sdxl-a100"), time_factor=0.1)
    service, pause = engine.service_seconds(0, 1), 1.0

    def hook(i: int, n: int) -> None:
        if i == 5:
            time.sleep(pause)  # the process was stopped here

    started = time.perf_counter()
    engine.generate([GenItem(prompt="x", seed=1, steps=50)], on_step=hook)
    assert time.perf_counter() - started >= pause + service * 44 / 50


def test_requests_routed_at_the_same_moment_do_not_pile_onto_one_idle_worker(
    user, empty_slots, transactional_db, settings
):
    """Routing reads the queues and inserts under one lock, so the second of two simultaneous requests sees the
    first one's row and takes another idle worker (before, both chose the same one and the second waited a
    whole batch: the main cause of expired requests at load 0.6 in tests/chaos.py)."""
    from webapp.serving.submission import Submission, submit

    settings.T2I_PROBE_LIMIT = 0
    serving_config(policy="nirvana", max_in_flight=0)
    r = broker()
    slots = range(settings.T2I_WORKERS)
    for slot in slots:
        r.set(alive_key(slot), "x", px=120_000)  # every slot live, so the choice is by queue length
    barrier = threading.Barrier(5)
    workers: list = []  # request ids

    def post(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            row, _ = submit(user, Submission(prompt=f"simultaneous request number {i} about {i * 7} cats", steps=20))
            workers.append(row.id)
        finally:
            connection.close()

    try:
        threads = [threading.Thread(target=post, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        r.delete(*[alive_key(slot) for slot in slots if slot not in (0, 1)])
        r.delete(*[gpu_queue(slot) for slot in slots if slot not in (0, 1)])
    rows = list(GenerationRequest.objects.filter(pk__in=workers).order_by("accepted_at"))
    assert len(rows) == 5
    for i, later in enumerate(rows):
        for earlier in rows[:i]:
            if earlier.worker == later.worker:  # only if the earlier one had finished when the later was routed
                assert earlier.finished_at is not None and earlier.finished_at <= later.accepted_at, (earlier, later)
