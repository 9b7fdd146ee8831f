"""proteus_models (PROTEUS as published) in the live system: the admin selects it, the controller solves and
stores its variant plan, submit routes by it (K′ = the worker's model variant, no cache), emulated worker
processes load a variant when the plan switches them (serving nothing for its load time × time factor) and
record the variant that served each request and its quality; a real engine refuses it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from scheduler.model_variants import configured
from scheduler.planner import Plan, PlanStatus
from tests.helpers import make_request, serving_config, serving_config_admin_form, wait_for_status
from webapp.ledger.models import (
    AllocationPlan,
    BatchRecord,
    GenerationRequest,
    PlanRecordStatus,
    ServingConfig,
    Status,
)
from webapp.ledger.publishing import publish
from webapp.serving import controller, live_policy, routing

URL = "/api/v1/generations/"
FACTOR = 0.05  # emulated seconds per profile second: SD-Turbo's 21.7 s load takes 1.09 s
N_WORKERS = 5
SLOTS = (3, 4)  # GPU slots no other test's workers consume (session workers 0, 1; multihost 5, 6; crash 7)
REAL_ENGINE_SLOT = 10  # not 8 or 9: test_recovery and test_request_experience route rows there expecting no consumer
VARIANTS = configured(time_factor=FACTOR)
INDEX = {v.name: i for i, v in enumerate(VARIANTS)}


@pytest.fixture
def emulated(settings):
    """This process (submit, controller) as a deployment of emulated workers with N_WORKERS slots."""
    settings.T2I_ENGINE, settings.T2I_TIME_FACTOR, settings.T2I_WORKERS = "emulated", FACTOR, N_WORKERS
    live_policy.live_policy.reset()
    controller.reset_controller_state()
    yield settings
    live_policy.live_policy.reset()
    controller.reset_controller_state()


@pytest.fixture(scope="module")
def variant_workers(start_worker):
    """Emulated worker processes on SLOTS, stopped when this module ends: alive, they would serve rows that
    later tests route to any live slot, writing while those tests' teardown flushes the database."""
    env = {"T2I_ENGINE": "emulated", "T2I_TIME_FACTOR": str(FACTOR), "T2I_WORKERS": str(N_WORKERS)}
    with ThreadPoolExecutor(len(SLOTS)) as pool:
        workers = list(pool.map(lambda slot: start_worker(slot, env=env), SLOTS))
    yield workers
    for worker in workers:
        worker.stop()


def until(condition, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def store_plan(layout: list[int], share: dict[int, float]) -> AllocationPlan:
    """A variant plan stored as the controller stores one: `layout` = variant per worker, `share` = fraction
    of requests per variant (the dispatcher's route)."""
    policy, _ = live_policy.live_policy.get(ServingConfig.current())
    levels = list(range(len(VARIANTS)))
    plan = Plan(
        levels=levels,
        worker_levels=layout,
        route=[[share.get(v, 0.0) for v in levels] for _ in levels],
        batch_size=dict(policy.caps),
        workers_per_level=[layout.count(v) for v in levels],
        status=PlanStatus.OPTIMAL,
        policy="proteus_models",
    )
    return AllocationPlan.objects.create(
        policy="proteus_models", status=PlanRecordStatus.OK, solution=plan.to_dict(), worker_levels=layout
    )


def adopted(plan: AllocationPlan) -> bool:
    return live_policy.live_policy.get(ServingConfig.current())[1] == plan.id


def submit_and_finish(api, prompts: list[str]) -> list[GenerationRequest]:
    ids = []
    for prompt in prompts:
        response = api.post(URL, {"prompt": prompt}, format="json")
        assert response.status_code == 202, response.content
        ids.append(response.json()["id"])
    rows = [wait_for_status(rid, {Status.SUCCEEDED, Status.FAILED, Status.EXPIRED}, timeout=60) for rid in ids]
    assert [r.status for r in rows] == [Status.SUCCEEDED] * len(rows), [r.error for r in rows]
    return rows


def assert_served_by(api, row: GenerationRequest, name: str) -> None:
    """The row records the variant (index as K′, its quality, its name) and the API answer names it."""
    variant = VARIANTS[INDEX[name]]
    assert row.k_served == INDEX[name] and row.quality == pytest.approx(variant.quality)
    assert row.cache_neighbor_id is None and row.k_star == 0  # no approximate cache
    assert name in row.model_label
    assert name in api.get(f"{URL}{row.id}/").json()["model_label"]


def first_batch_after(plan: AllocationPlan, worker: int) -> BatchRecord:
    return until(
        lambda: BatchRecord.objects.filter(worker=worker, finished_at__gte=plan.created_at).order_by("id").first()
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # real worker processes read these rows
def test_requests_are_served_by_the_planned_variants_and_a_switch_costs_its_load_time(api, emulated, variant_workers):
    serving_config(policy="proteus_models")
    # Plan 1: the two live slots on SD-Turbo (every worker started on SDXL, variant 0), every request there.
    turbo = VARIANTS[INDEX["sd_turbo"]]
    first = store_plan([0, 0, 0, INDEX["sd_turbo"], INDEX["sd_turbo"]], {INDEX["sd_turbo"]: 1.0})
    until(lambda: adopted(first))
    rows = submit_and_finish(api, [f"a lighthouse at dusk, take {i}" for i in range(4)])
    for row in rows:
        assert row.worker in SLOTS
        assert_served_by(api, row, "sd_turbo")
    # Each slot that served loaded SD-Turbo first: it started nothing for the load time after the plan
    # appeared, and its first batch records the load.
    for worker in {row.worker for row in rows}:
        started = min(r.started_at for r in rows if r.worker == worker)
        assert started - first.created_at >= timedelta(seconds=turbo.load_s)
        batch = first_batch_after(first, worker)
        assert batch.model_variant == "sd_turbo" and batch.k_prime == INDEX["sd_turbo"]
        assert batch.load_seconds >= turbo.load_s

    # Plan 2: slot 4 switches to SDXS and takes every request; slot 3 keeps SD-Turbo.
    sdxs = VARIANTS[INDEX["sdxs"]]
    second = store_plan([0, 0, 0, INDEX["sd_turbo"], INDEX["sdxs"]], {INDEX["sdxs"]: 1.0})
    until(lambda: adopted(second))
    rows = submit_and_finish(api, [f"a red fox in the snow, take {i}" for i in range(2)])
    for row in rows:
        assert row.worker == 4
        assert_served_by(api, row, "sdxs")
    assert min(r.started_at for r in rows) - second.created_at >= timedelta(seconds=sdxs.load_s)
    batch = first_batch_after(second, 4)
    assert batch.model_variant == "sdxs" and batch.load_seconds >= sdxs.load_s


@pytest.mark.django_db(transaction=True)
def test_rows_queued_before_a_switch_are_served_by_the_new_variant(user, emulated, variant_workers):
    """As in the simulator: what a worker had queued when the plan switched it waits for the load and is then
    served (and recorded) by the new variant, whatever K′ routing gave it."""
    config = serving_config(policy="proteus_models")
    live_policy.live_policy.get(config)
    store_plan([0, 0, 0, INDEX["sd15"], INDEX["sd15"]], {INDEX["sd15"]: 1.0})
    row = make_request(user, prompt="queued before the switch", worker=3, k_served=INDEX["sdxs"], quality=0.1)
    publish(row.id, 3)
    row = wait_for_status(row.id, {Status.SUCCEEDED, Status.FAILED}, timeout=60)
    assert row.status == Status.SUCCEEDED, row.error
    assert row.k_served == INDEX["sd15"] and row.quality == pytest.approx(VARIANTS[INDEX["sd15"]].quality)
    assert "sd15" in row.model_label


@pytest.mark.django_db
def test_controller_solves_and_stores_a_variant_plan_that_submit_routes_by(api, emulated):
    serving_config(policy="proteus_models")
    stored = controller.run_controller()
    assert stored.policy == "proteus_models" and stored.status == PlanRecordStatus.OK
    assert len(stored.worker_levels) == N_WORKERS and set(stored.worker_levels) <= set(range(len(VARIANTS)))
    policy, version = live_policy.live_policy.get(ServingConfig.current())
    assert version == stored.id and policy.current.worker_levels == stored.worker_levels
    body = api.post(URL, {"prompt": "a cat"}, format="json").json()
    row = GenerationRequest.objects.get(pk=body["id"])
    variant = stored.worker_levels[row.worker]
    assert row.k_served == variant and row.quality == pytest.approx(VARIANTS[variant].quality)
    assert row.cache_neighbor_id is None and row.similarity is None  # no cache lookup at all
    config = ServingConfig.current()
    assert routing.find_neighbour(config, row.owner, "a cat", row.embedding, steps=20, width=64, height=64) is None


@pytest.mark.django_db
def test_a_real_engine_refuses_the_policy_at_configuration(settings, embedded_services):
    settings.T2I_ENGINE = "diffusers"
    with pytest.raises(ValidationError) as refused:
        serving_config(policy="proteus_models")
    assert "T2I_ENGINE=emulated" in str(refused.value.message_dict["policy"])
    settings.T2I_ENGINE = "emulated"
    with pytest.raises(ValidationError) as refused:
        serving_config(policy="proteus_models", manual_layout="0,0")
    assert "manual_layout" in refused.value.message_dict


@pytest.mark.django_db
def test_the_admin_form_offers_it_and_says_why_it_is_refused(client, django_user_model, settings, embedded_services):
    url, data = serving_config_admin_form(client, django_user_model)
    data["policy"] = "proteus_models"
    response = client.post(url, data)
    assert response.status_code == 200 and b"T2I_ENGINE=emulated" in response.content
    settings.T2I_ENGINE = "emulated"
    assert client.post(url, data).status_code == 302
    assert ServingConfig.current().policy == "proteus_models"


@pytest.mark.django_db(transaction=True)
def test_a_real_engine_worker_fails_a_variant_row_with_the_reason(user, start_worker, embedded_services):
    """A configuration saved past the form check (e.g. from a shell): a real-engine worker does not serve the
    row with its one model under a variant's name; it fails it and says why."""
    worker = start_worker(REAL_ENGINE_SLOT, env={"T2I_PRELOAD_ENGINE": "0"})
    try:
        ServingConfig.objects.filter(pk=ServingConfig.current().pk).update(policy="proteus_models")
        row = make_request(user, prompt="needs a model variant", worker=REAL_ENGINE_SLOT, k_served=INDEX["sdxs"])
        publish(row.id, REAL_ENGINE_SLOT)
        row = wait_for_status(row.id, {Status.SUCCEEDED, Status.FAILED}, timeout=60)
    finally:
        worker.stop()  # it must not outlive the test: a later test's flush would race its writes
    assert row.status == Status.FAILED and "T2I_ENGINE=emulated" in row.error and not row.image
