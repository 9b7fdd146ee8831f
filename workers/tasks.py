"""Celery tasks of the GPU workers. Each worker consumes only its own queue gpu.<i>.

A message carries only a request id. The worker claims a batch of queued rows from that row's
group (itself, the same K′ and shape; up to the batch limit routing set) in the fair order of
`transitions.claim_batch` (interactive first, owners round-robin), runs them as one engine call and
records the batch's service time. If the batch passed the message's own row over, the row gets a
new message (`publishing.claim_for_message`). A message for a row that is already claimed or
terminal (a duplicate, a redelivery after a crash, a row that joined an earlier batch) does
nothing.

proteus_models (PROTEUS as published): before it claims, a worker follows the stored plan's model variant
for its slot (`_hold_planned_variant`): on a switch it loads the new variant (the emulated engine sleeps the
variant's load time × time factor, serving nothing) and relabels the rows queued for it to that variant, as
the simulator does; it then serves each batch with the variant it holds (its latency table, no cache) and
records the variant's index (k_served), quality and name (model_label; BatchRecord.model_variant, with the
seconds spent loading). A worker with a real engine holds one model: it fails such rows with the reason
(ServingConfig.clean already refuses the policy unless T2I_ENGINE=emulated).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings

from scheduler.dispatch import batch_to_run, is_hopeless, may_cut, on_time_batch
from scheduler.model_variants import ModelVariant, configured
from scheduler.policies import MODEL_VARIANT_POLICIES, sheds_hopeless
from scheduler.quality import QualityModel
from webapp.cache import store as cache_store
from webapp.cache.keys import model_key_for
from webapp.cache.tenants import tenant_for
from webapp.ledger import transitions
from webapp.ledger.models import ACTIVE_STATES, BatchRecord, CacheScope, GenerationRequest, ServingConfig, Status
from webapp.ledger.publishing import claim_for_message, publish
from webapp.ledger.queues import GENERATE_TASK
from webapp.serving.live_config import recovery_for, scheduler_config
from webapp.serving.live_policy import adoptable_plan

from . import runtime
from .heartbeat import Heartbeat
from .image_store import ImageParameters, delete_image, save_image
from .leases import LeaseKeeper, LeaseLost
from .outages import CLAIM_PATIENCE_S, RESULT_PATIENCE_S, with_database
from .progress import StepReporter
from .time_limits import BatchTimedOut, BatchTimeLimit, TimeLimits, limits_for

log = logging.getLogger(__name__)
QUALITY = QualityModel()  # the yardstick Q(s, K′), the same for every policy


def _start(row: GenerationRequest) -> tuple[int, object]:
    """K′ and start latent: the neighbour's latent at K′ (or the largest level below it that is
    still cached); K′ = 0 from the seed when there is no neighbour or it was evicted."""
    if not row.k_served or row.cache_neighbor_id is None:
        return 0, None
    found = cache_store.start_latent(row.cache_neighbor_id, row.k_served)
    return found if found is not None else (0, None)


def _items_for(rows: list[GenerationRequest]) -> list:
    from .engine import GenItem  # torch: only GPU workers pay for it, not the control worker

    items = []
    for r in rows:
        level, latent = _start(r)
        items.append(
            GenItem(
                prompt=r.prompt,
                negative_prompt=r.negative_prompt,
                seed=r.seed,
                width=r.width,
                height=r.height,
                steps=r.steps,
                guidance_scale=r.guidance_scale,
                start_level=level,
                start_latent=latent,
            )
        )
    return items


def _grow_cache(rows: list[GenerationRequest], results: list, config: ServingConfig) -> None:
    """Store the latents each run captured (levels after its own K′) under its cache key, with each
    entry's provenance (its owner's tenant, the owner, the request). Called only after the engine call
    returned for the whole batch, so a failed generation never adds an entry; a row that ended meanwhile
    (cancelled, failed or expired) adds none either. Nothing with the scope `off`."""
    if config.cache_scope == CacheScope.OFF:
        return
    still_running = set(
        GenerationRequest.objects.filter(pk__in=[r.pk for r in rows], status__in=ACTIVE_STATES).values_list(
            "pk", flat=True
        )
    )
    tenants: dict[int, str] = {}
    by_key: dict[str, tuple[list, list, list, list]] = {}
    for row, result in zip(rows, results):
        if result is not None and result.latents and row.pk in still_running:  # None: dropped (cancelled)
            if row.owner_id not in tenants:
                tenants[row.owner_id] = tenant_for(row.owner)
            prompts, latents, vectors, origins = by_key.setdefault(
                model_key_for(row.steps, row.width, row.height), ([], [], [], [])
            )
            prompts.append(row.prompt)
            latents.append(result.latents)
            vectors.append(row.embedding)
            origins.append(cache_store.Provenance(tenants[row.owner_id], row.owner_id, row.pk))
    for key, (prompts, latents, vectors, origins) in by_key.items():
        # Rows created before embeddings were stored (or by hand) are embedded here.
        embeddings = None if any(v is None for v in vectors) else vectors
        try:
            cache_store.insert_many(key, prompts, latents, embeddings, provenance=origins)
        except Exception:  # the images are done; a cache write problem must not fail them
            log.exception("could not add %d prompt(s) to the cache", len(prompts))


def _shed_hopeless(rows: list[GenerationRequest], config: ServingConfig, worker: int) -> list[GenerationRequest]:
    """The overload rules the simulator runs, for policies that shed (a claimed batch shares one K′):
    1. a row that would end after its deadline even if it ran now alone ends `expired`
       (scheduler.dispatch.is_hopeless);
    2. the batch cut (scheduler.dispatch.batch_to_run, may_cut): when the batch would make a member late
       that a shorter batch would not, the rest and the rows queued behind on this worker still make theirs
       after it, and the stored plan is not in a sustained overload, the rest are given back to the queue
       with a new message, and the shorter batch runs;
    3. otherwise (scheduler.dispatch.on_time_batch, with the cut switched on) the largest batch whose rows,
       in order, make their deadlines in it runs; rows passed over for it end `expired`, the rows after it go
       back to the queue. With the cut switched off, rows the whole batch would make late end `expired` and
       the rest run.
    Service time: the profile's L(K′, b), or the fastest batch of that size recently measured at that K′
    if faster (a profile that overstates this GPU must not shed work that would have made it).
    A retry (its first worker crashed or froze) is never shed and never cut for: the system made it late,
    so it is served late rather than dropped (the simulator has no crashes, so the rule there is unchanged)."""
    sc = scheduler_config(config)
    if not sheds_hopeless(config.policy, sc):
        return rows
    now = time.time()
    k_prime = rows[0].k_served or 0
    measured: dict[int, float] = {}

    def service_s(batch: int) -> float:
        if batch not in measured:
            profile_s = sc.profile.latency(k_prime, batch) if k_prime in sc.levels else 0.0
            measured[batch] = _min_service_s(profile_s, k_prime, batch)
        return measured[batch]

    def deadline(row: GenerationRequest) -> float:
        return row.deadline.timestamp() if row.attempts <= 1 else math.inf

    def shed_late(candidates: list[GenerationRequest], batch_s: float) -> list[GenerationRequest]:
        keep = []
        for row in candidates:
            if is_hopeless(now, deadline(row), batch_s):
                transitions.shed(
                    row.id,
                    f"Shed: with {batch_s:.1f} s of work left it could no longer finish by its "
                    f"deadline (SLO {config.slo_seconds:g} s); it did not hold a GPU others needed.",
                )
            else:
                keep.append(row)
        return keep

    rows = shed_late(rows, service_s(1))
    if sc.batch_cut and len(rows) > 1:
        keep = batch_to_run(now, [deadline(row) for row in rows], service_s, lambda: _queued_behind(worker, sc))
        if keep < len(rows) and not may_cut(adoptable_plan(config.policy, settings.T2I_WORKERS), sc.batch_cut_overload):
            keep = len(rows)
        if keep < len(rows):
            _give_back(rows[keep:], worker)
            return rows[:keep]
        chosen, scanned = on_time_batch(now, [deadline(row) for row in rows], len(rows), service_s)
        run = [rows[i] for i in chosen]
        shed_late([row for row in rows[:scanned] if row not in run], service_s(max(1, len(run))))
        _give_back(rows[scanned:], worker)
        return run
    return shed_late(rows, service_s(len(rows))) if len(rows) > 1 else rows


def _give_back(rows: list[GenerationRequest], worker: int) -> None:
    """Claimed rows this batch will not run go back to the queue, each with a new message."""
    if not rows:
        return
    for request_id in transitions.release([row.id for row in rows], worker):
        publish(request_id, worker)


def _queued_behind(worker: int, sc) -> list[tuple[float, float]]:
    """(expected seconds, deadline) of the rows queued for this worker, oldest first: what the batch cut
    must not make late. Expected seconds: the profile's L(K′, b) / b at the row's level and batch limit."""
    queued = GenerationRequest.objects.filter(worker=worker, status=Status.QUEUED).order_by("created_at")
    behind = []
    for k_served, limit, deadline in queued.values_list("k_served", "batch_limit", "deadline"):
        k_prime, batch = k_served or 0, max(1, limit or 1)
        cost = sc.profile.latency(k_prime, batch) / batch if k_prime in sc.levels else 0.0
        behind.append((cost, deadline.timestamp()))
    return behind


def _recent_service_s(k_prime: int, batch_size: int) -> list[float]:
    """Service times of the last 50 batches of this K′ and size (what shedding and the time limits compare
    with the profile's L(K′, b))."""
    return list(
        BatchRecord.objects.filter(k_prime=k_prime, batch_size=batch_size)
        .order_by("-id")
        .values_list("service_seconds", flat=True)[:50]
    )


def _min_service_s(profile_s: float, k_prime: int, batch_size: int) -> float:
    measured = _recent_service_s(k_prime, batch_size)
    return min([profile_s, *measured]) if profile_s else min(measured, default=0.0)


def _fail_all(rows: list[GenerationRequest], reason: str) -> None:
    """End every row `failed`. The engine's message may quote a prompt of the batch: each owner's copy
    has the texts of the other owners' rows replaced, so an error never carries another owner's prompt."""
    for row in rows:
        transitions.fail(row.id, scrub_foreign_text(reason, row, rows), from_states=(Status.RUNNING,))


FOREIGN_TEXT = "[another request's prompt]"


def scrub_foreign_text(message: str, row: GenerationRequest, batch: list[GenerationRequest]) -> str:
    """``message`` without the prompts and negative prompts of ``batch`` rows that ``row``'s owner does not
    own (longest first; texts under 4 characters are too short to carry anything and are left)."""
    foreign = {
        text
        for other in batch
        if other.owner_id != row.owner_id
        for text in (other.prompt, other.negative_prompt)
        if len(text) >= 4
    }
    for text in sorted(foreign, key=len, reverse=True):
        message = message.replace(text, FOREIGN_TEXT)
    return message


def _image_parameters(row: GenerationRequest, k_prime: int, sampler: str) -> ImageParameters:
    """The parameters written into the PNG (workers/image_store.py: AUTOMATIC1111's `parameters` chunk)."""
    model = "emulated" if settings.T2I_ENGINE == "emulated" else Path(settings.T2I_MODEL_PATH).name
    return ImageParameters(
        request_id=row.id,
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        steps=row.steps,
        sampler=sampler,
        guidance_scale=row.guidance_scale,
        seed=row.seed,
        width=row.width,
        height=row.height,
        model=model,
        k_served=k_prime,
        k_star=row.k_star,
    )


class HeldVariant(NamedTuple):
    """proteus_models: the model variant a batch runs with."""

    index: int
    variants: tuple[ModelVariant, ...]

    @property
    def model(self) -> ModelVariant:
        return self.variants[self.index]


def _planned_variant(worker: int, config: ServingConfig, n_variants: int) -> int | None:
    """The variant the stored plan assigns this worker; None without a usable plan for this cluster."""
    plan = adoptable_plan(config.policy, settings.T2I_WORKERS)
    if plan is None or worker >= len(plan.worker_levels) or not 0 <= plan.worker_levels[worker] < n_variants:
        return None
    return plan.worker_levels[worker]


def _hold_planned_variant(worker: int, config: ServingConfig) -> HeldVariant:
    """Follow the plan's model variant for this worker before claiming (see the module docstring). Returns the
    variant held now; the seconds spent loading wait in the slot for the next batch record (the message that
    paid for the load may find its row already served in another batch)."""
    sc = scheduler_config(config)
    variants = configured(sc.variant_quality, sc.variant_time_factor)
    slot = runtime.variant_slot()
    target = with_database(lambda: _planned_variant(worker, config, len(variants)), CLAIM_PATIENCE_S, "read the plan")
    started = time.monotonic()
    if target is not None and slot.switch_to(target, variants[target].load_s, started):
        new = variants[target]
        log.info("worker %d: loads model variant %s (%.2f s), serves nothing meanwhile", worker, new.name, new.load_s)
        with_database(
            lambda: GenerationRequest.objects.filter(worker=worker, status=Status.QUEUED).update(
                k_served=target, quality=new.quality
            ),
            CLAIM_PATIENCE_S,
            "relabel the queued rows",
        )
    waited = slot.wait_s(time.monotonic())
    if waited:
        time.sleep(waited)  # the emulated load: this worker serves nothing meanwhile
        slot.unrecorded_load_s += time.monotonic() - started
    return HeldVariant(slot.held, variants)


def _refuse_model_variants(request_id: str, worker: int, lease_s: float, policy: str) -> str:
    """A real engine holds one model: rows routed by a model-variant policy fail with the reason, never served
    by that one model under another variant's name."""
    reason = (
        f"Failed: the policy {policy} switches workers between model variants, which only emulated workers can "
        f"do (T2I_ENGINE=emulated); this worker's engine ({settings.T2I_ENGINE}) holds one model."
    )
    log.error("worker %d: %s", worker, reason)
    claimed = claim_for_message(uuid.UUID(request_id), worker, lease_s)
    _fail_all(list(GenerationRequest.objects.filter(pk__in=claimed)), reason)
    return "failed: model variants need the emulated engine"


def _record_successes(
    rows: list[GenerationRequest],
    items: list,
    results: list,
    service_s: float,
    sampler: str,
    held: HeldVariant | None = None,
) -> None:
    """Save each image and end its row `succeeded` with the K′ it actually ran at (for proteus_models: the
    variant that served it, its quality and name). A row cancelled while its batch ran gets no image: skipped
    here, or its files removed if it was cancelled during the save."""
    label = runtime.model_label(settings.T2I_MODEL_PATH) if held is None else runtime.variant_label(held.model)
    active = set(
        GenerationRequest.objects.filter(pk__in=[r.pk for r in rows], status__in=ACTIVE_STATES).values_list(
            "pk", flat=True
        )
    )
    scores = _adherence_scores(rows, results)
    for row, item, result, score in zip(rows, items, results, scores):
        if row.pk not in active or result is None:  # None: the engine dropped it from the batch (it ended)
            continue
        k_prime = item.start_level
        params = _image_parameters(row, k_prime, sampler)
        if held is not None:
            k_prime, params = held.index, dataclasses.replace(params, model=held.model.name, k_served=held.index)
        image_name, thumb_name = save_image(row.id, result.image, params)
        fields = dict(
            image=image_name,
            thumbnail=thumb_name,
            model_label=label,
            k_served=k_prime,
            batch_size=len(rows),
            service_seconds=service_s,
            measured_adherence=score,
        )
        if held is not None:  # the variant held when the batch ran (the plan may have switched it)
            fields["quality"] = held.model.quality
        elif k_prime != row.k_served:  # neighbour's level evicted since routing
            fields["quality"] = QUALITY.q(row.similarity, k_prime) if k_prime else 1.0
        if not transitions.succeed(row.id, **fields):
            delete_image(image_name, thumb_name)


def _adherence_scores(rows: list[GenerationRequest], results: list) -> list[float | None]:
    """With the demo model, the share of each prompt's attributes its scorer reads back from the image
    (issue 15; workers/demo/live_scoring.py); None for other models and prompts outside its grammar.
    Never fails a batch: the images are made whatever the scorer does."""
    if settings.T2I_ENGINE == "emulated":
        return [None] * len(rows)
    from .demo.live_scoring import adherence_scores  # torch: GPU workers only

    try:
        images = [None if r is None else r.image for r in results]
        return adherence_scores(settings.T2I_MODEL_PATH, [row.prompt for row in rows], images)
    except Exception:
        log.exception("could not score the batch's images with the demo model's scorer")
        return [None] * len(rows)


def _time_limits(rows: list[GenerationRequest], config: ServingConfig, profile_s: float | None = None) -> TimeLimits:
    """`profile_s`: the expected service time when the K′ profile does not give it (a model variant's)."""
    sc = scheduler_config(config)
    k_prime, batch = rows[0].k_served or 0, len(rows)
    if profile_s is None:
        profile_s = sc.profile.latency(k_prime, batch) if k_prime in sc.levels else 0.0
    slowest = _recent_service_s(k_prime, batch)
    scale = (rows[0].width * rows[0].height) / max(1, config.default_size**2) * rows[0].steps / config.default_steps
    return limits_for(max([profile_s, *slowest]), settings.T2I_TASK_TIME_LIMIT_FLOOR_S, scale)


@shared_task(name=GENERATE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def generate(request_id: str) -> str:
    worker = runtime.worker_index()
    config = with_database(ServingConfig.current, CLAIM_PATIENCE_S, "read the serving configuration")
    lease_s = recovery_for(config).lease_s
    held = None
    if config.policy in MODEL_VARIANT_POLICIES:
        if settings.T2I_ENGINE != "emulated":
            return _refuse_model_variants(request_id, worker, lease_s, config.policy)
        held = _hold_planned_variant(worker, config)
    # The engine before the claim: a worker that has just (re)started loads it first (a pipeline, or torch
    # for the emulated one; seconds on a busy host), and a claimed row's lease is not kept during the load,
    # so it would expire and the reconciler take the row back and count an attempt.
    engine = runtime.engine() if held is None else runtime.variant_engine(held.variants, held.index)
    claiming = time.perf_counter()  # the batch holds this worker from here (batch_overhead)
    claimed = with_database(
        lambda: claim_for_message(uuid.UUID(request_id), worker, lease_s), CLAIM_PATIENCE_S, "claim a batch"
    )
    if not claimed:
        return "skipped: already claimed or finished"
    rows = _shed_hopeless(list(GenerationRequest.objects.filter(pk__in=claimed).order_by("created_at")), config, worker)
    if not rows:
        return "shed: no claimed request could meet its deadline"
    claimed = [row.id for row in rows]
    limits = _time_limits(rows, config, None if held is None else engine.service_seconds(0, len(rows)))
    timed_out = (
        f"Failed: the batch ran past its time limit of {{:.0f}} s (expected about {limits.soft_s / 4:.1f} s); "
        "the worker was reset."
    )
    # The step hook reports progress (a background thread writes it to Redis) and stops a lost batch.
    with LeaseKeeper(claimed, lease_s, worker) as keeper, StepReporter(claimed, keeper.stop_if_lost) as reporter:
        try:
            with BatchTimeLimit(limits, on_hard=lambda: _fail_all(rows, timed_out.format(limits.hard_s))):
                items = _items_for(rows)  # a model-variant row has no cache neighbour: a full generation
                reporter.to_rgb = getattr(engine, "latent_rgb", None)  # live previews, where the engine has latents
                previews = {"on_latent": reporter.preview} if reporter.to_rgb else {}
                started = time.perf_counter()
                results = engine.generate(items, on_step=reporter, **previews)
                service_s = time.perf_counter() - started
                sampler = getattr(engine, "scheduler_name", settings.T2I_ENGINE)
            keeper.finishing = True
        except LeaseLost as exc:  # handed to another worker while this one was frozen: not generated twice
            log.warning("batch %s stopped: %s", claimed, exc)
            return "stopped: lease lost"
        except BatchTimedOut:
            log.error("batch %s passed its soft time limit of %.0f s", claimed, limits.soft_s)
            _fail_all(rows, timed_out.format(limits.soft_s))
            return "failed: time limit"
        except Exception as exc:
            log.exception("generation failed for %s", claimed)
            _fail_all(rows, f"Generation failed: {type(exc).__name__}: {exc}")
            return "failed"
        # Grow the cache before reporting success: a client that resubmits a similar prompt
        # after seeing "succeeded" finds this one cached.
        if held is None:  # model variants fill no approximate cache
            with_database(lambda: _grow_cache(rows, results, config), RESULT_PATIENCE_S, "grow the cache")
        with_database(
            lambda: _record_successes(rows, items, results, service_s, sampler, held),
            RESULT_PATIENCE_S,
            "record the results",
        )
    dropped = [row.id for row, result in zip(rows, results) if result is None]
    if dropped:  # its time is not that of a batch of len(rows): no BatchRecord, which shedding and limits read
        log.info("cancelled while their batch ran, dropped from it, nothing written: %s", " ".join(map(str, dropped)))
        return f"done: batch of {len(rows)}, {len(dropped)} dropped (cancelled)"
    BatchRecord.objects.create(
        worker=worker,
        k_prime=max(item.start_level for item in items) if held is None else held.index,
        batch_size=len(rows),
        service_seconds=service_s,
        overhead_seconds=max(0.0, time.perf_counter() - claiming - service_s),
        engine=settings.T2I_ENGINE,
        plan_version=rows[0].plan_version,
        model_variant="" if held is None else held.model.name,
        load_seconds=None if held is None else runtime.variant_slot().take_unrecorded_load(),
    )
    return f"done: batch of {len(rows)}"


@worker_process_init.connect
def _start_gpu_child(**kwargs) -> Heartbeat | None:
    """In a GPU worker's child (the process that runs batches): load the engine in a thread (Celery kills a
    child whose init hook takes more than 4 s, and the first request should not wait for it), then start
    the heartbeat. A worker counts as live for routing and the reconciler only once it can serve: while a
    restarted worker loads its pipeline, requests go to the others and its queued rows are moved to them."""
    if os.environ.get("T2I_WORKER_INDEX") is None:
        return None
    heartbeat = Heartbeat(runtime.worker_index())
    if os.environ.get("T2I_PRELOAD_ENGINE", "1") == "1":
        runtime.preload_in_background(then=heartbeat.start)
    else:
        heartbeat.start()
    return heartbeat
