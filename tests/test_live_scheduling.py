"""The live system runs the scheduler's policy objects: dispatch, batch claiming, the
controller and its plans, the manual K layout, the emulated engine."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from tests.helpers import UNSERVED_SLOT, cached_entry, make_request, serving_config, serving_config_admin_form
from webapp.ledger import publishing, transitions
from webapp.ledger.models import AllocationPlan, GenerationRequest, ServingConfig, Status
from webapp.serving import controller, live_config, live_policy
from webapp.serving.cluster_state import cluster_view

pytestmark = pytest.mark.django_db  # plain: rolled back; the one test with threads overrides it

URL = "/api/v1/generations/"


@pytest.fixture(autouse=True)
def fresh_scheduler_state():
    live_policy.live_policy.reset()
    controller.reset_controller_state()
    yield
    live_policy.live_policy.reset()
    controller.reset_controller_state()


def test_routing_writes_the_policys_decision(api, embedded_services, monkeypatch):
    """What the row records is exactly what the active policy decided for it."""
    seen = []
    config = serving_config(policy="clipper_ht")
    policy, _ = live_policy.live_policy.get(config)
    original = policy.dispatch

    def spy(request, view, now):
        decision = original(request, view, now)
        seen.append((decision, policy.name))
        return decision

    monkeypatch.setattr(policy, "dispatch", spy)
    body = api.post(URL, {"prompt": "a cat"}, format="json").json()
    decision, name = seen[-1]
    row = GenerationRequest.objects.get(pk=body["id"])
    assert name == "clipper_ht"
    assert row.worker == decision.worker_index and row.batch_limit == decision.batch_size
    # No cached neighbour: K′ = 0 whatever the policy's level.
    assert row.k_served == 0 and row.k_star == 0 and row.similarity is None


def test_cluster_view_counts_queued_and_running_rows(user, embedded_services):
    config = serving_config(policy="prompt_aware")
    policy, _ = live_policy.live_policy.get(config)
    now = timezone.now()
    for worker, status in [(0, Status.QUEUED), (0, Status.QUEUED), (1, Status.RUNNING)]:
        make_request(
            user,
            steps=50,
            deadline=now,
            worker=worker,
            status=status,
            k_served=0,
            started_at=now if status == Status.RUNNING else None,
        )
    view = cluster_view(policy, now.timestamp())
    assert view.queue_len == [2, 0] and view.running == [0, 1]
    assert view.queued_s[0] > 0 and view.busy_until[1] > now.timestamp()


@pytest.mark.django_db(transaction=True)  # four threads, each with its own connection, claim these rows
def test_batch_claim_never_gives_a_row_to_two_workers(user, other_user, embedded_services, monkeypatch):
    """Four consumers share one queue of messages (a list standing in for Redis; a claim that passes
    its own row over sends it a new message, which joins the queue): every row is claimed exactly once
    and no message is left over."""
    deadline = timezone.now() + timedelta(minutes=5)
    rows = [
        make_request(
            user if i % 3 else other_user,
            prompt=f"p{i}",
            seed=i,
            steps=50,
            deadline=deadline,
            worker=UNSERVED_SLOT,
            k_served=0,
            batch_limit=4,
        )
        for i in range(40)
    ]
    messages = deque(row.id for row in rows)
    claims: list[list] = []
    lock = threading.Lock()
    in_flight = [0]

    def send(request_id, worker) -> bool:
        with lock:
            messages.append(request_id)
        return True

    monkeypatch.setattr(publishing, "publish", send)

    def worker(index: int) -> None:
        from django.db import connection

        try:
            while True:
                with lock:
                    if not messages and not in_flight[0]:
                        return
                    message = messages.popleft() if messages else None
                    in_flight[0] += message is not None
                if message is None:
                    time.sleep(0.001)  # another consumer may still send a message
                    continue
                got = publishing.claim_for_message(message, index, 30)  # autocommit: any new message is sent
                with lock:
                    claims.append(got)
                    in_flight[0] -= 1
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [rid for batch in claims for rid in batch]
    assert len(claimed) == len(set(claimed)) == 40  # every row exactly once
    assert max(len(b) for b in claims) <= 4
    assert GenerationRequest.objects.filter(status=Status.RUNNING).count() == 40


def test_claim_joins_only_same_worker_and_level(user, embedded_services):
    deadline = timezone.now() + timedelta(minutes=5)

    def make(worker, k, limit=4):
        return make_request(user, steps=50, deadline=deadline, worker=worker, k_served=k, batch_limit=limit)

    head, same, other_k, other_w = make(0, 10), make(0, 10), make(0, 25), make(1, 10)
    assert set(transitions.claim_batch(head.id, 0, 30)) == {head.id, same.id}
    assert transitions.claim_batch(head.id, 0, 30) == []  # its own message later: a no-op
    for other in (other_k, other_w):  # another K′, another worker: left for their own batches
        assert GenerationRequest.objects.get(pk=other.pk).status == Status.QUEUED


def test_controller_stores_a_plan_that_dispatch_adopts(user, embedded_services):
    serving_config(policy="prompt_aware")
    row = controller.run_controller()
    assert row.status == "ok" and AllocationPlan.current() == row
    assert len(row.worker_levels) == 2 and row.solution["route"]
    policy, version = live_policy.live_policy.get(ServingConfig.current())
    assert version == row.id and policy.current.worker_levels == row.worker_levels


def test_controller_keeps_previous_plan_when_the_solver_fails(user, embedded_services, monkeypatch):
    serving_config(policy="prompt_aware")
    good = controller.run_controller()
    from scheduler import policies

    def broken(self, now, demand):
        raise RuntimeError("HiGHS exploded")

    monkeypatch.setattr(policies.PromptAware, "plan", broken)
    bad = controller.run_controller()
    assert bad.status == "failed" and "HiGHS exploded" in bad.message
    assert AllocationPlan.current() == good


def test_controller_does_not_adopt_a_fallback_plan(user, embedded_services, monkeypatch):
    """The solver found nothing (the planner's emergency plan, every worker at the fastest level): the
    live controller records the run as failed, says why, and keeps serving on the previous plan."""
    serving_config(policy="prompt_aware")
    good = controller.run_controller()
    from scheduler import planner

    monkeypatch.setattr(planner, "_solve_program", lambda *a, **k: planner.MipSolution(None, 2, "no solution"))
    fallback = controller.run_controller()
    assert fallback.status == "failed" and "no solution" in fallback.message and "not adopted" in fallback.message
    assert fallback.solution["status"] == "fallback"  # recorded for the operator, not served on
    assert AllocationPlan.current() == good
    policy, version = live_policy.live_policy.get(ServingConfig.current())
    assert version == good.id and policy.current.worker_levels == good.worker_levels


def test_controller_discards_a_slow_solve(user, embedded_services, monkeypatch, settings):
    serving_config(policy="prompt_aware")
    good = controller.run_controller()
    settings.T2I_SLOW_SOLVE_FRACTION = 0.0
    slow = controller.run_controller()
    assert slow.status == "slow" and AllocationPlan.current() == good


def test_plan_change_does_not_move_queued_requests(api, embedded_services):
    serving_config(policy="prompt_aware", manual_layout="0,0")
    controller.run_controller()
    rid = api.post(URL, {"prompt": "stay where you are"}, format="json").json()["id"]
    before = GenerationRequest.objects.values("worker", "k_served", "plan_version").get(pk=rid)
    serving_config(manual_layout="25,25")
    controller.run_controller()
    after = GenerationRequest.objects.values("worker", "k_served", "plan_version").get(pk=rid)
    assert after == before


def test_manual_layout_pins_worker_levels(embedded_services):
    serving_config(policy="prompt_aware", manual_layout="0,25")
    row = controller.run_controller()
    assert row.status == "manual" and row.worker_levels == [0, 25]
    policy, version = live_policy.live_policy.get(ServingConfig.current())
    assert policy.current.worker_levels == [0, 25] and version == row.id


@pytest.mark.parametrize(
    "layout, fragment",
    [
        ("0,7", "Unknown level"),
        ("0,0,0", "names 3 worker(s) but the cluster has 2"),
        ("0,,25", "empty entry"),
        ("a,b", "whole numbers"),
    ],
)
def test_manual_layout_validation(embedded_services, layout, fragment):
    with pytest.raises(ValidationError) as err:
        serving_config(manual_layout=layout)
    assert fragment in " ".join(err.value.message_dict["manual_layout"])


def test_admin_form_shows_layout_errors(client, django_user_model, embedded_services):
    url, data = serving_config_admin_form(client, django_user_model)
    data["manual_layout"] = "0,99"
    resp = client.post(url, data)
    assert resp.status_code == 200 and b"Unknown level" in resp.content
    data["manual_layout"] = "0,25"
    assert client.post(url, data).status_code == 302
    assert ServingConfig.current().layout_list == [0, 25]


def test_switching_policy_takes_effect_at_the_next_tick(api, embedded_services):
    serving_config(policy="clipper_ha")
    assert controller.run_controller().policy == "clipper_ha"
    serving_config(policy="clipper_ht")
    row = controller.run_controller()
    assert row.policy == "clipper_ht" and set(row.worker_levels) == {25}
    policy, _ = live_policy.live_policy.get(ServingConfig.current())
    assert policy.name == "clipper_ht"


def test_emulated_engine_sleeps_the_profile_latency(embedded_services, settings):
    from scheduler.profiles import load_profile
    from workers.emulated_engine import EmulatedEngine
    from workers.engine import GenItem

    profile = load_profile("sd15-a100")
    engine = EmulatedEngine(profile, time_factor=0.2)
    for k, b in [(0, 1), (25, 1), (0, 4)]:
        items = [GenItem(prompt="x", start_level=k, start_latent=None, steps=50) for _ in range(b)]
        started = time.perf_counter()
        results = engine.generate(items)
        elapsed = time.perf_counter() - started
        expected = profile.latency(k, b) * 0.2
        assert expected <= elapsed < expected + 0.5  # sleep never returns early; may overshoot
        assert all(r.timings.batch_size == b for r in results)
        assert sorted(results[0].latents) == [lv for lv in (5, 10, 15, 20, 25) if lv > k]


def test_time_factor_scales_the_profile_the_scheduler_plans_with(embedded_services, settings):
    from scheduler.profiles import load_profile

    settings.T2I_ENGINE, settings.T2I_PROFILE = "emulated", "sdxl-a100"
    reference = load_profile("sdxl-a100")
    for factor in (1.0, 0.25):
        settings.T2I_TIME_FACTOR = factor
        profile = live_config.scheduler_config(ServingConfig.current()).profile
        assert profile.latency(25, 2) == pytest.approx(reference.latency(25, 2) * factor)
        from workers.runtime import emulated_engine

        assert emulated_engine().service_seconds(0, 1) == pytest.approx(reference.latency(0, 1) * factor)


def test_the_measured_batch_overhead_joins_the_profile_live_routing_uses(embedded_services, settings):
    from scheduler.profiles import load_profile
    from webapp.ledger.models import BatchRecord
    from webapp.serving.batch_overhead import forget_measured_overhead

    settings.T2I_ENGINE, settings.T2I_PROFILE, settings.T2I_TIME_FACTOR = "emulated", "sdxl-a100", 1.0
    settings.T2I_MEASURED_OVERHEAD = True
    bare = load_profile("sdxl-a100").latency(0, 1)
    config = ServingConfig.current()
    forget_measured_overhead()
    before = live_policy.live_policy.get(config)[0]
    assert before.config.profile.latency(0, 1) == pytest.approx(bare)  # nothing measured yet
    for overhead in (0.18, 0.22, 0.21, None):  # None: a batch recorded before the field existed
        BatchRecord.objects.create(
            worker=0, k_prime=0, batch_size=1, service_seconds=6.1, overhead_seconds=overhead, engine="emulated"
        )
    forget_measured_overhead()  # a deployment reads the ledger again after OVERHEAD_REFRESH_S
    after = live_policy.live_policy.get(config)[0]
    assert after is not before  # the overhead is part of the policy's configuration
    assert after.config.profile.latency(0, 1) == pytest.approx(bare + 0.25)  # 90th percentile 0.218, up
    assert live_config.scheduler_config(config).profile.latency(25, 2) == pytest.approx(
        load_profile("sdxl-a100").latency(25, 2) + 0.25
    )
    settings.T2I_MEASURED_OVERHEAD = False
    forget_measured_overhead()
    assert live_config.scheduler_config(config).profile.latency(0, 1) == pytest.approx(bare)


def test_the_overhead_in_use_moves_only_when_a_reading_leaves_it_by_more_than_a_step():
    from webapp.serving.batch_overhead import settle

    assert settle(None, 0.1) == 0.1  # the first reading is taken as it is
    assert settle(0.1, 0.15) == 0.1 and settle(0.15, 0.1) == 0.15  # neighbouring steps: no change
    assert settle(0.1, 0.2) == 0.2 and settle(0.2, 0.05) == 0.05


def test_a_burst_between_periods_requests_one_early_replan(user, embedded_services, settings):
    """Live event trigger: arrivals since the plan far above its demand → one controller run is requested
    (deduplicated across calls and processes by a Redis key); arrivals on plan → none."""
    from webapp.ledger.publishing import broker
    from webapp.serving import replan

    serving_config(policy="prompt_aware")
    policy, _ = live_policy.live_policy.get(ServingConfig.current())
    made = timezone.now() - timedelta(seconds=10)
    plan = policy.current
    plan.time, plan.demand_rate = made.timestamp(), 1.0  # adopted 10 s ago, expecting 1 req/s
    policy.set_plan(plan)
    broker().delete(replan.DEDUPE_KEY)
    replan.reset()
    for _ in range(10):  # 10 in 10 s: on plan
        make_request(user, created_at=made + timedelta(seconds=1))
    assert not replan.maybe_request_replan(policy, timezone.now().timestamp())
    for _ in range(30):  # 40 in 10 s: a burst
        make_request(user, created_at=made + timedelta(seconds=5))
    replan.reset()
    assert replan.maybe_request_replan(policy, timezone.now().timestamp())
    assert broker().exists(replan.DEDUPE_KEY)
    replan.reset()
    assert not replan.maybe_request_replan(policy, timezone.now().timestamp())  # already requested


def test_a_claimed_request_that_can_no_longer_make_its_deadline_is_shed(user, embedded_services):
    """The simulator's overload rule, live: prompt_aware's worker ends a claimed row that would finish late
    even if it ran now as `expired` (a violation, with the reason) and runs the rest; a baseline runs both."""
    from workers.tasks import _shed_hopeless

    now = timezone.now()
    late = make_request(user, prompt="late", status=Status.RUNNING, deadline=now + timedelta(seconds=0.5))
    fine = make_request(user, prompt="fine", status=Status.RUNNING, deadline=now + timedelta(minutes=5))
    serving_config(policy="prompt_aware")
    assert [r.id for r in _shed_hopeless([late, fine], ServingConfig.current(), UNSERVED_SLOT)] == [fine.id]
    late.refresh_from_db()
    assert late.status == Status.EXPIRED and late.error.startswith("Shed:")
    serving_config(policy="clipper_ht")
    again = make_request(user, prompt="late too", status=Status.RUNNING, deadline=now + timedelta(seconds=0.5))
    assert [r.id for r in _shed_hopeless([again], ServingConfig.current(), UNSERVED_SLOT)] == [again.id]
    serving_config(policy="prompt_aware", shed_hopeless=False)  # the admin's switch: served late, not shed
    kept = make_request(user, prompt="late, kept", status=Status.RUNNING, deadline=now + timedelta(seconds=0.5))
    assert [r.id for r in _shed_hopeless([kept], ServingConfig.current(), UNSERVED_SLOT)] == [kept.id]
    kept.refresh_from_db()
    assert kept.status == Status.RUNNING


@pytest.fixture
def unserved_queue(embedded_services, settings):
    """The real broker's queue of UNSERVED_SLOT, empty before and after the test; SDXL's profile, × 4 in
    time, so that the deadlines below are seconds away from every threshold on a busy machine."""
    from webapp.ledger.queues import gpu_queue

    settings.T2I_ENGINE, settings.T2I_PROFILE, settings.T2I_TIME_FACTOR = "emulated", "sdxl-a100", 4.0
    AllocationPlan.objects.all().delete()  # no stored plan: the cut's overload check has nothing to say
    publishing.broker().delete(gpu_queue(UNSERVED_SLOT))
    yield
    publishing.broker().delete(gpu_queue(UNSERVED_SLOT))


def _claimed_pair(user, first_s: float, second_s: float) -> tuple[GenerationRequest, GenerationRequest]:
    """Two rows claimed together at K′ = 25 on UNSERVED_SLOT, due `first_s` and `second_s` from now."""
    from webapp.ledger.models import BatchRecord

    BatchRecord.objects.filter(k_prime=25).delete()  # the profile's latencies, not some earlier test's batches
    now = timezone.now()
    return tuple(
        make_request(
            user,
            prompt=f"pair {i}",
            status=Status.RUNNING,
            worker=UNSERVED_SLOT,
            k_served=25,
            attempts=1,
            started_at=now,
            created_at=now - timedelta(seconds=10 - i),
            deadline=now + timedelta(seconds=due),
        )
        for i, due in enumerate((first_s, second_s))
    )


def test_a_batch_that_would_make_its_first_row_late_is_cut_and_the_rest_requeued(user, unserved_queue):
    """The batch cut, live: the first row would be late in a batch of two but not alone, and the second still
    makes its deadline after it: the first runs alone, the second goes back to the queue (attempt taken
    back) with a message of its own in the real broker; nothing is shed."""
    from workers.tasks import _shed_hopeless

    serving_config(policy="prompt_aware")
    profile = live_config.scheduler_config(ServingConfig.current()).profile
    alone, pair = profile.latency(25, 1), profile.latency(25, 2)
    assert pair > alone + 0.5  # the test's premise: a pair takes clearly longer than one
    first, second = _claimed_pair(user, (alone + pair) / 2, 2 * alone + 30.0)
    assert [r.id for r in _shed_hopeless([first, second], ServingConfig.current(), UNSERVED_SLOT)] == [first.id]
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == Status.RUNNING
    assert (second.status, second.attempts, second.started_at) == (Status.QUEUED, 0, None)
    assert str(second.id) in publishing.waiting_request_ids([UNSERVED_SLOT])


def test_a_cut_refused_for_a_row_queued_behind_still_runs_the_batch_its_rows_make_on_time(user, unserved_queue):
    """The same pair, but a row queued behind them on this worker would miss its deadline if the first ran
    alone, so the batch cut is refused. The pair would still end the first late, and a claimed batch is not
    refilled: the batch that runs is judged at its own size (scheduler.dispatch.on_time_batch). The first,
    on time alone, runs; the second goes back to the queue; nothing is shed (before, the first was shed
    for a pair that never ran)."""
    from workers.tasks import _shed_hopeless

    serving_config(policy="prompt_aware")
    profile = live_config.scheduler_config(ServingConfig.current()).profile
    alone, pair = profile.latency(25, 1), profile.latency(25, 2)
    first, second = _claimed_pair(user, (alone + pair) / 2, 2 * alone + 30.0)
    # behind: due after the pair and its own run (pair + alone), before a cut's three runs (3 × alone)
    make_request(
        user, prompt="behind", worker=UNSERVED_SLOT, k_served=25, batch_limit=1,
        deadline=timezone.now() + timedelta(seconds=(pair + alone + 3 * alone) / 2),
    )  # fmt: skip
    assert pair + alone + 2.0 < 3 * alone  # the premise
    assert [r.id for r in _shed_hopeless([first, second], ServingConfig.current(), UNSERVED_SLOT)] == [first.id]
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == Status.RUNNING
    assert (second.status, second.attempts, second.started_at) == (Status.QUEUED, 0, None)
    assert str(second.id) in publishing.waiting_request_ids([UNSERVED_SLOT])


def test_a_row_late_even_in_the_batch_that_runs_is_shed_and_the_rest_run(user, unserved_queue):
    """Three rows at K′ = 25 claimed together, the cut refused (the second would not make its deadline after
    the first ran alone): the first is late in a batch of three and of two, so it is shed; the other two run
    as a pair, on time in it."""
    from workers.tasks import _shed_hopeless

    serving_config(policy="prompt_aware")
    profile = live_config.scheduler_config(ServingConfig.current()).profile
    alone, pair, three = (profile.latency(25, b) for b in (1, 2, 3))
    assert alone + 1.0 < pair < three - 1.0  # the premise
    first, second = _claimed_pair(user, (alone + pair) / 2, (pair + three) / 2)
    third = make_request(
        user, prompt="third", worker=UNSERVED_SLOT, k_served=25, batch_limit=3, status=Status.RUNNING,
        attempts=1, started_at=timezone.now(), deadline=timezone.now() + timedelta(seconds=three + 30.0),
    )  # fmt: skip
    got = _shed_hopeless([first, second, third], ServingConfig.current(), UNSERVED_SLOT)
    assert [r.id for r in got] == [second.id, third.id]
    first.refresh_from_db()
    assert first.status == Status.EXPIRED and first.error.startswith("Shed:")
    assert not publishing.waiting_request_ids([UNSERVED_SLOT])


def test_the_admin_switch_turns_the_batch_cut_off(user, unserved_queue):
    """The pair that the first cut test cuts, with the batch cut switched off in the serving configuration:
    the worker sheds the first row (the rule before the cut existed) and requeues nothing."""
    from workers.tasks import _shed_hopeless

    serving_config(policy="prompt_aware", batch_cut=False)
    profile = live_config.scheduler_config(ServingConfig.current()).profile
    alone, pair = profile.latency(25, 1), profile.latency(25, 2)
    first, second = _claimed_pair(user, (alone + pair) / 2, 2 * alone + 30.0)
    assert [r.id for r in _shed_hopeless([first, second], ServingConfig.current(), UNSERVED_SLOT)] == [second.id]
    first.refresh_from_db()
    assert first.status == Status.EXPIRED
    assert not publishing.waiting_request_ids([UNSERVED_SLOT])


def test_the_prompt_aware_levers_reach_the_controller_and_the_trigger(user, embedded_services):
    """The admin's lever settings are the SchedulerConfig the live policy, controller and workers run with
    (the controller records it with each plan), and with early re-plans off a burst requests no controller
    run."""
    from webapp.ledger.publishing import broker
    from webapp.serving import replan

    config = serving_config(
        policy="prompt_aware",
        demand_estimate="max",
        pressure_replan=True,
        batch_cut_overload=2.5,
        event_replan=False,
        upgrade_budget_slo=None,
        upgrade_margin=0.1,
        replan_threshold=0.5,
        replan_min_gap_s=4.0,
        backlog_aware=False,
        backlog_horizon_periods=1.0,
        similarity_ranked=False,
        deadline_redirect=False,
        shed_hopeless=False,
    )
    sc = live_config.scheduler_config(config)
    assert (sc.demand_estimate, sc.pressure_replan, sc.batch_cut_overload, sc.event_replan) == ("max", True, 2.5, False)
    assert (sc.upgrade_budget_slo, sc.upgrade_margin) == (math.inf, 0.1)  # blank budget: no bank
    replan_and_backlog = (sc.replan_threshold, sc.replan_min_gap_s, sc.backlog_aware, sc.backlog_horizon_periods)
    assert replan_and_backlog == (0.5, 4.0, False, 1.0)
    assert (sc.similarity_ranked, sc.deadline_redirect, sc.shed_hopeless) == (False, False, False)
    recorded = controller.run_controller().inputs["config"]
    stored = (recorded["demand_estimate"], recorded["batch_cut_overload"], recorded["event_replan"])
    assert stored == ("max", 2.5, False)
    levers = ("replan_threshold", "replan_min_gap_s", "backlog_aware", "similarity_ranked", "deadline_redirect")
    assert [recorded[name] for name in levers] == [0.5, 4.0, False, False, False]
    assert recorded["upgrade_budget_slo"] is None  # inf, stored as JSON can hold it
    policy, _ = live_policy.live_policy.get(ServingConfig.current())
    made = timezone.now() - timedelta(seconds=10)
    plan = policy.current
    plan.time, plan.demand_rate = made.timestamp(), 1.0
    policy.set_plan(plan)
    broker().delete(replan.DEDUPE_KEY)
    replan.reset()
    for _ in range(40):  # 40 in 10 s against 1 req/s planned: a burst, but early re-plans are off
        make_request(user, created_at=made + timedelta(seconds=5))
    assert not replan.maybe_request_replan(policy, timezone.now().timestamp())
    assert not broker().exists(replan.DEDUPE_KEY)


def test_every_live_lever_is_a_scheduler_setting_with_the_simulators_default():
    """Each admin setting in LEVER_FIELDS maps to the SchedulerConfig setting of the same name, and a fresh
    deployment starts where the simulator's tables were measured (the defaults agree), except admission:
    live degrades by default, the simulator queues (docs/results.md, "Admission control at arrival")."""
    import dataclasses

    from scheduler.interface import SchedulerConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SchedulerConfig)}
    for name in (*live_config.LEVER_FIELDS, "upgrade_budget_slo"):
        assert name in defaults, name
        if name != "admission":
            assert ServingConfig._meta.get_field(name).default == defaults[name], name


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("batch_cut_overload", "0.5", b"greater than or equal to 1.0"),
        ("demand_estimate", "median", b"not one of"),
        ("upgrade_margin", "-1", b"greater than or equal to 0.0"),
        ("replan_min_gap_s", "0", b"greater than or equal to 0.1"),
        ("backlog_horizon_periods", "-2", b"greater than or equal to 0.1"),
    ],
)
def test_admin_form_rejects_bad_lever_settings(client, django_user_model, embedded_services, field, value, fragment):
    url, data = serving_config_admin_form(client, django_user_model)
    data[field] = value
    resp = client.post(url, data)
    assert resp.status_code == 200 and fragment in resp.content
    good = {
        "batch_cut_overload": 2.0,
        "demand_estimate": "max",
        "upgrade_margin": 0.2,
        "replan_min_gap_s": 5.0,
        "backlog_horizon_periods": 1.5,
    }[field]
    data[field] = str(good)
    assert client.post(url, data).status_code == 302
    assert getattr(ServingConfig.current(), field) == good


def test_a_late_retry_is_served_late_not_shed(user, embedded_services):
    """A row whose first worker crashed (attempts 2) was made late by the system: it runs, late, instead of
    being shed."""
    from workers.tasks import _shed_hopeless

    serving_config(policy="prompt_aware")
    now = timezone.now()
    retry = make_request(user, prompt="retry", status=Status.RUNNING, attempts=2, deadline=now + timedelta(seconds=0.5))
    assert [r.id for r in _shed_hopeless([retry], ServingConfig.current(), UNSERVED_SLOT)] == [retry.id]
    retry.refresh_from_db()
    assert retry.status == Status.RUNNING


@pytest.fixture
def no_queue_first_end(embedded_services):
    """No web process has ended queue-first yet (another test's routing may have left the mark)."""
    from webapp.ledger.publishing import broker
    from webapp.serving import replan

    broker().delete(replan.QUEUE_FIRST_END_KEY)
    yield
    broker().delete(replan.QUEUE_FIRST_END_KEY)


def submitted_then_cached(api, prompt: str):
    """Submit `prompt` through the API, then give it a cache entry (index only) under the row's model key, so
    that a near-duplicate submitted next finds it as its neighbour: (the row, the entry)."""
    from webapp.cache.keys import model_key_for

    row = GenerationRequest.objects.get(pk=api.post(URL, {"prompt": prompt}, format="json").json()["id"])
    return row, cached_entry(row.prompt, model_key=model_key_for(row.steps, row.width, row.height))


def test_queue_first_routes_at_full_quality_and_keeps_the_neighbour_for_a_re_route(api, no_queue_first_end):
    """prompt_aware starts in queue-first (its first plan is all K′ = 0): a near-duplicate of a cached prompt
    runs at K′ = 0, not resumed, and the row keeps the neighbour the re-route at the mode's end would use."""
    serving_config(policy="prompt_aware")
    first, entry = submitted_then_cached(api, "a red fox in the snow")
    assert first.k_served == 0 and first.queue_first_neighbor_id is None  # no neighbour: nothing to re-route
    body = api.post(URL, {"prompt": "a red fox in the snow, highly detailed"}, format="json").json()
    near = GenerationRequest.objects.get(pk=body["id"])
    assert near.similarity > 0.8 and near.k_star > 0
    assert near.k_served == 0 and near.cache_neighbor_id is None and near.quality == 1.0
    assert near.queue_first_neighbor_id == entry.pk
    assert "queue_first_neighbor_id" not in body  # internal: not part of the API


def test_the_end_of_queue_first_re_routes_its_queued_rows_to_the_plans_level(user, embedded_services):
    """requeue_queue_first: a queued queue-first row takes the current plan's level for it (resumed from its
    neighbour, the level's batch cap, its quality); a row already claimed, or whose neighbour is gone, stays."""
    from scheduler.planner import Plan
    from scheduler.policies import make_policy
    from webapp.serving.requeue import requeue_queue_first

    serving_config(policy="prompt_aware")
    entry = cached_entry("a fox")
    fields = dict(k_served=0, k_star=25, similarity=0.97, worker=0, batch_limit=2, quality=1.0)
    queued = make_request(user, queue_first_neighbor_id=entry.pk, **fields)
    claimed = make_request(user, queue_first_neighbor_id=entry.pk, status=Status.RUNNING, **fields)
    evicted = make_request(user, queue_first_neighbor_id=entry.pk + 1000, **fields)
    policy = make_policy("prompt_aware", live_config.scheduler_config(ServingConfig.current()))
    levels = policy.levels
    n = len(policy.current.worker_levels)
    policy.set_plan(  # every class to the top level
        Plan(
            levels=levels,
            worker_levels=[levels[-1]] * n,
            route=[[0.0] * (len(levels) - 1) + [1.0] for _ in levels],
            batch_size=policy.caps,
            workers_per_level=[0] * (len(levels) - 1) + [n],
        )
    )
    assert requeue_queue_first(policy) == 1
    queued.refresh_from_db()
    assert (queued.k_served, queued.cache_neighbor_id, queued.queue_first_neighbor_id) == (25, entry.pk, None)
    assert queued.batch_limit == policy.caps[25] and queued.quality == pytest.approx(policy.quality(0.97, 25))
    claimed.refresh_from_db()
    evicted.refresh_from_db()
    assert (claimed.k_served, claimed.cache_neighbor_id) == (0, None)
    assert (evicted.k_served, evicted.cache_neighbor_id, evicted.queue_first_neighbor_id) == (0, None, None)
    assert requeue_queue_first(policy) == 0  # nothing left to move


def test_the_end_of_queue_first_asks_for_one_re_plan_with_the_re_route(user, embedded_services, monkeypatch):
    """Routing: the request that ends queue-first asks the controller for a run with requeue=True, once per
    minimum gap across processes (a Redis key), whatever the early re-plan's own key says."""
    from webapp.ledger.publishing import broker
    from webapp.serving import replan

    sent = []
    monkeypatch.setattr(replan.app, "send_task", lambda name, **kw: sent.append((name, kw)))
    broker().delete(replan.REQUEUE_KEY)
    assert replan.request_requeue(2.0) and not replan.request_requeue(2.0)
    assert len(sent) == 1 and sent[0][1]["kwargs"] == {"requeue": True}
    assert broker().ttl(replan.REQUEUE_KEY) > 0
    broker().delete(replan.REQUEUE_KEY)


def test_a_request_the_queues_cannot_take_ends_queue_first_and_the_controller_re_routes(
    api, other_user, no_queue_first_end, monkeypatch
):
    """End to end on the ledger: both workers' queues hold more than the SLO at K′ = 0 (rows queue-first
    queued, with a neighbour); the next request cannot make its deadline at K′ = 0, so routing ends the mode
    and asks for a re-route; the controller run it asks for plans for the backlog and moves the queued rows
    to the plan's levels."""
    from webapp.ledger.publishing import broker
    from webapp.serving import replan

    sent = []
    monkeypatch.setattr(replan.app, "send_task", lambda name, **kw: sent.append(kw["kwargs"]))
    broker().delete(replan.REQUEUE_KEY)
    config = serving_config(policy="prompt_aware")
    entry = cached_entry("a fox")
    policy, _ = live_policy.live_policy.get(config)
    assert policy.in_queue_first
    slo_s = policy.config.slo_s
    cap = policy.caps[0]
    per_worker = cap * (math.ceil(2 * slo_s / policy.config.profile.latency(0, cap)) + 1)  # > 2 SLOs of work each
    for w in range(policy.config.n_workers):
        for _ in range(per_worker):
            make_request(
                other_user,
                worker=w,
                k_served=0,
                k_star=25,
                similarity=0.97,
                batch_limit=1,
                queue_first_neighbor_id=entry.pk,
            )
    response = api.post(URL, {"prompt": "one too many"}, format="json")  # admission may refuse it (503)
    assert response.status_code in (201, 202, 503), response.content
    assert not policy.in_queue_first
    assert float(broker().get(replan.QUEUE_FIRST_END_KEY)) == policy.queue_first_ended_at  # for the other processes
    assert not GenerationRequest.objects.filter(prompt="one too many", queue_first_neighbor_id__isnull=False).exists()
    assert sent.count({"requeue": True}) == 1  # (the early re-plan may ask too: the arrivals left its demand)
    broker().delete(replan.REQUEUE_KEY, replan.DEDUPE_KEY)
    controller.run_controller(requeue=True)
    moved = GenerationRequest.objects.filter(status=Status.QUEUED, k_served__gt=0, cache_neighbor_id=entry.pk)
    assert moved.exists()
    assert not GenerationRequest.objects.filter(status=Status.QUEUED, queue_first_neighbor_id__isnull=False).exists()


def test_queue_first_ended_by_another_process_ends_in_this_one_without_a_second_re_route(
    api, no_queue_first_end, monkeypatch
):
    """Each web process holds its own policy object. Once another process has ended queue-first (the mark in
    Redis), this process routes by the plan too, and asks for no re-route of its own; a policy object built
    after the end (a new process, a changed configuration) starts with the mode off."""
    from webapp.serving import replan

    sent = []
    monkeypatch.setattr(replan.app, "send_task", lambda name, **kw: sent.append(kw["kwargs"]))
    config = serving_config(policy="prompt_aware")
    policy, _ = live_policy.live_policy.get(config)
    assert policy.in_queue_first
    submitted_then_cached(api, "a red fox in the snow")
    replan.publish_queue_first_end(time.time())  # what the process whose request found the queues full writes
    body = api.post(URL, {"prompt": "a red fox in the snow, highly detailed"}, format="json").json()
    row = GenerationRequest.objects.get(pk=body["id"])
    assert row.similarity > 0.8 and row.queue_first_neighbor_id is None  # routed by the plan, not queue-first
    assert not policy.in_queue_first and {"requeue": True} not in sent
    live_policy.live_policy.reset()  # a new process
    assert not live_policy.live_policy.get(config)[0].in_queue_first


def test_routing_reads_the_end_of_queue_first_in_the_heartbeats_round_trip(api, no_queue_first_end, monkeypatch):
    """While the mode is on, routing reads the mark another process left with the workers' heartbeats (one
    MGET), not with a Redis read of its own, and still ends the mode here."""
    from webapp.serving import replan

    monkeypatch.setattr(replan.app, "send_task", lambda name, **kw: None)
    policy, _ = live_policy.live_policy.get(serving_config(policy="prompt_aware"))
    assert policy.in_queue_first
    replan.publish_queue_first_end(time.time())
    monkeypatch.setattr(replan, "queue_first_end", lambda: pytest.fail("routing read the mark on its own"))
    assert api.post(URL, {"prompt": "a red fox in the snow"}, format="json").status_code == 202
    assert not policy.in_queue_first


def test_with_early_re_plans_off_the_end_of_queue_first_is_re_routed_by_the_periods_run(
    user, embedded_services, monkeypatch
):
    """event_replan off: the end of queue-first sends no controller run but leaves a mark, and the next run of
    the period (the beat's control task) re-routes the queued rows, as the simulator does at its next tick;
    a run without the mark leaves queue-first rows as they are."""
    from webapp.ledger.publishing import broker
    from webapp.serving import replan, tasks

    sent = []
    monkeypatch.setattr(replan.app, "send_task", lambda name, **kw: sent.append(kw))
    broker().delete(replan.REQUEUE_PENDING_KEY)
    serving_config(policy="prompt_aware", event_replan=False)
    entry = cached_entry("a fox")
    fields = dict(queue_first_neighbor_id=entry.pk, k_served=0, k_star=25, similarity=0.97, worker=0, batch_limit=2)
    first = make_request(user, **fields)
    tasks.control_task()  # no mark: the mode has not ended
    first.refresh_from_db()
    assert first.queue_first_neighbor_id == entry.pk
    replan.defer_requeue()
    assert sent == [] and broker().get(replan.REQUEUE_PENDING_KEY) is not None
    tasks.control_task()
    first.refresh_from_db()
    assert first.queue_first_neighbor_id is None  # re-routed (to the level this plan gives it)
    assert broker().get(replan.REQUEUE_PENDING_KEY) is None
    second = make_request(user, **fields)
    tasks.control_task()  # the mark was taken: one re-route per end of the mode
    second.refresh_from_db()
    assert second.queue_first_neighbor_id == entry.pk
