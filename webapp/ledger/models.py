"""The request ledger: the Postgres row is the source of truth; Celery only carries messages."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from pgvector.django import VectorField

from scheduler.demand import ESTIMATE_MODES
from scheduler.interface import SchedulerConfig
from scheduler.policies import LIVE_POLICY_NAMES, MODEL_VARIANT_POLICIES, POLICY_LABELS
from webapp.singleton import SingletonModel

SEED_MAX = 2**32 - 1  # torch.Generator.manual_seed accepts any 64-bit value; keep it portable
POLICY_CHOICES = [(name, POLICY_LABELS[name]) for name in LIVE_POLICY_NAMES]


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Priority(models.TextChoices):
    """A request's class: its SLO (ServingConfig) and its place in a worker's claim (interactive first)."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


# Members of this Django group submit as `batch` unless a request says otherwise (migration 0008 creates it).
BATCH_USERS_GROUP = "batch-users"

# What a request shows for a cache neighbour that its owner did not create: never another owner's text.
NEUTRAL_NEIGHBOUR = "a similar earlier prompt"


class CacheScope(models.TextChoices):
    """Who may reuse a cache entry (ServingConfig.cache_scope; webapp/cache/tenants.py says what a tenant is)."""

    SHARED = "shared", "shared: one cache for everyone"
    TENANT = "tenant", "tenant: only entries of the same tenant (and operator-warmed ones)"
    OFF = "off", "off: no lookup and no insert"


class AdmissionMode(models.TextChoices):
    """What submit does with a request that cannot meet its deadline at the level it was routed to
    (scheduler/admission.py: the same rule in the simulator)."""

    QUEUE = "queue", "queue: accept it anyway (it will probably be late)"
    DEGRADE = "degrade", "degrade: serve it at a faster (approximate) level if that makes it, else refuse"
    SHED = "shed", "shed: refuse it at once with 503 and Retry-After"


def default_cache_scope() -> str:
    """T2I_CACHE_SCOPE: the scope of a new configuration row, and of the existing one when the field was added."""
    return settings.T2I_CACHE_SCOPE


TERMINAL_STATES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.EXPIRED)
ACTIVE_STATES = (Status.QUEUED, Status.RUNNING)


class GenerationRequest(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations")
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)
    # With an idempotency key: which server-filled fields (seed, width, height, steps, priority) the body
    # stated, comma-separated ("" for none), so a retry that leaves one out (or states one the original left
    # to the server) is told apart (webapp/serving/submission.replay_of). Null: no key, or an older row.
    stated_fields = models.CharField(max_length=64, null=True, blank=True, editable=False)

    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True, default="")
    seed = models.BigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    steps = models.PositiveIntegerField()
    guidance_scale = models.FloatField(default=7.5)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    priority = models.CharField(
        max_length=16,
        choices=Priority.choices,
        default=Priority.INTERACTIVE,
        help_text="Class: its SLO sets the deadline; interactive rows are claimed before batch rows.",
    )
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    publish_count = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now, help_text="Arrival time.")
    accepted_at = models.DateTimeField(
        null=True, blank=True, help_text="When the row was written (after embedding and routing); null for old rows."
    )
    published_at = models.DateTimeField(null=True, blank=True)  # last time a message was sent
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField()

    image = models.FileField(upload_to="images/%Y/%m/%d/", blank=True)
    thumbnail = models.FileField(upload_to="thumbs/%Y/%m/%d/", blank=True)
    model_label = models.CharField(
        max_length=200, blank=True, default="", help_text="What made the image, e.g. 'tiny random model'."
    )

    # Scheduler fields (filled by routing at submit and by the worker).
    k_star = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Optimal K predicted from similarity.")
    k_served = models.PositiveSmallIntegerField(null=True, blank=True, help_text="K' the request was served at.")
    worker = models.PositiveSmallIntegerField(null=True, blank=True, db_index=True, validators=[MinValueValidator(0)])
    plan_version = models.PositiveIntegerField(null=True, blank=True)
    redirected = models.BooleanField(default=False)
    cache_neighbor_id = models.BigIntegerField(null=True, blank=True)
    # Routed at K′ = 0 by queue-first (scheduler.policies.PromptAware) although a neighbour was found: the
    # re-plan that ends the mode may re-route the row while it is queued, to resume from this neighbour.
    queue_first_neighbor_id = models.BigIntegerField(null=True, blank=True, editable=False)
    # The neighbour's prompt is stored only when the owner created that cache entry themselves
    # (cache_neighbor_same_owner); otherwise it stays blank and `neighbour_text` shows NEUTRAL_NEIGHBOUR.
    cache_neighbor_prompt = models.TextField(blank=True, default="")
    cache_neighbor_same_owner = models.BooleanField(
        default=False, help_text="The cache neighbour was created by this request's owner."
    )
    similarity = models.FloatField(null=True, blank=True)
    # The prompt's MiniLM embedding from submit, kept so the worker adds the prompt to the
    # cache without embedding it again.
    embedding = VectorField(dimensions=384, null=True, blank=True, editable=False)
    batch_limit = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Largest batch dispatch allowed it to join."
    )
    batch_size = models.PositiveSmallIntegerField(null=True, blank=True)
    service_seconds = models.FloatField(null=True, blank=True)
    quality = models.FloatField(null=True, blank=True, help_text="Expected quality Q(s, K').")
    # Issue 15: with the demo model, the share of the prompt's four attributes (colour, shape, position,
    # background) that the model's scorer reads back from the served image (1.0: all four, i.e. it adheres).
    # Null for other models and for prompts the demo world's grammar does not parse.
    measured_adherence = models.FloatField(
        null=True, blank=True, help_text="Demo model: share of the prompt's 4 attributes the scorer reads back."
    )

    # The owner's gallery (issue 12): a star, and deletion. A deleted row stays for the SLO history (status and
    # times), but is gone for its owner (every owner view filters it out), with its prompt text and files erased.
    favourite = models.BooleanField(default=False)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Deleted by its owner: hidden, text erased.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status", "worker"]),
            models.Index(fields=["created_at"]),
            # Fair claiming (transitions.claim_batch): the queued rows of one batch group, and each
            # owner's last start ("least recently served"), both read by index.
            models.Index(
                fields=["worker", "k_served", "width", "height", "steps", "created_at"],
                condition=Q(status="queued"),
                name="queued_claim_group",
            ),
            models.Index(fields=["owner", "started_at"], name="owner_last_started"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="unique_idempotency_key_per_owner",
            ),
            models.CheckConstraint(condition=Q(seed__gte=0) & Q(seed__lte=SEED_MAX), name="seed_in_range"),
        ]

    def __str__(self) -> str:
        # No prompt text: admin breadcrumbs, deletion summaries and the admin log show this to staff.
        return f"request {self.id} [{self.status}]"

    @property
    def neighbour_text(self) -> str:
        """What the owner may read about the cache neighbour: its prompt only if they created that entry
        themselves, a neutral phrase for anyone else's, "" when there was none. Rendering goes through
        this, so a row written before the rule existed shows no other owner's text either."""
        if self.cache_neighbor_same_owner and self.cache_neighbor_prompt:
            return self.cache_neighbor_prompt
        return NEUTRAL_NEIGHBOUR if self.similarity is not None else ""

    def get_absolute_url(self) -> str:
        return reverse("request-detail", args=[self.id])

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def queue_wait_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.started_at - self.created_at).total_seconds()

    @property
    def latency_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()

    @property
    def on_time(self) -> bool | None:
        if not self.is_terminal:
            return None
        return self.status == Status.SUCCEEDED and self.finished_at <= self.deadline


class ServingConfig(SingletonModel):
    """Operator-tunable serving settings: one row, edited in the admin."""

    slo_seconds = models.FloatField(
        "interactive SLO (s)",
        validators=[MinValueValidator(0.1)],
        help_text="SLO of interactive requests (the default class): deadline = arrival + SLO.",
    )
    batch_slo_seconds = models.FloatField(
        "batch SLO (s)",
        default=300.0,
        validators=[MinValueValidator(0.1)],
        help_text="SLO of batch requests; at least the interactive SLO. Batch rows are claimed after interactive ones.",
    )
    default_steps = models.PositiveIntegerField()
    min_steps = models.PositiveIntegerField(default=1)
    max_steps = models.PositiveIntegerField(default=150)
    default_size = models.PositiveIntegerField()
    allowed_sizes = models.CharField(
        max_length=200, help_text="Comma-separated pixel sizes allowed for width and height."
    )
    max_in_flight = models.PositiveIntegerField(help_text="Per-user cap on queued + running requests (0 = no cap).")

    # Scheduling (scheduler/ policies). Changes apply at the next controller tick, no restart.
    policy = models.CharField(max_length=32, choices=POLICY_CHOICES, default="prompt_aware")
    k_levels = models.CharField(
        max_length=100,
        default="0,5,10,15,20,25",
        help_text="K levels a worker may run at, comma-separated; must include 0.",
    )
    thresholds = models.CharField(
        max_length=200,
        default="0.95:25,0.90:20,0.85:15,0.75:10,0.65:5",
        help_text="Similarity → K* rule: 'similarity:K' pairs; similarity strictly above gives K.",
    )
    load_threshold = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0.0)],
        help_text="Outstanding requests per worker at a level above which dispatch switches to batching.",
    )
    util_target = models.FloatField(
        default=0.85, validators=[MinValueValidator(0.05)], help_text="Planned utilisation of each level's capacity."
    )
    controller_period_s = models.FloatField(
        default=10.0, validators=[MinValueValidator(1.0)], help_text="Seconds between controller runs (beat)."
    )
    manual_layout = models.CharField(
        max_length=2000,
        blank=True,
        default="",
        help_text="Pin the K level of every worker instead of solving, e.g. '0,0,25,25'. "
        "Blank: the policy's controller decides.",
    )
    cache_scope = models.CharField(
        max_length=16,
        choices=CacheScope.choices,
        default=default_cache_scope,
        help_text="Whose cache entries a request may resume from. A tenant is the user's Django group with the "
        "lowest id (the batch-users group aside), or the user alone. Applies to new requests at once.",
    )
    admission = models.CharField(
        "admission under overload",
        max_length=16,
        choices=AdmissionMode.choices,
        default=AdmissionMode.DEGRADE,
        help_text="When a new request's predicted finish is past its deadline even on the soonest-free worker.",
    )
    # prompt_aware's levers (issue 13), as in the simulator; the defaults are SchedulerConfig's.
    demand_estimate = models.CharField(
        max_length=8,
        choices=[(mode, mode) for mode in ESTIMATE_MODES],
        default=SchedulerConfig.demand_estimate,
        help_text="What the controller plans for: total (fast-up/slow-down on the total rate, split by a "
        "slowly moving class mix), max (the same per K* class), last (the last window), ewma.",
    )
    event_replan = models.BooleanField(
        "early re-plans",
        default=SchedulerConfig.event_replan,
        help_text="Re-solve between controller periods when arrivals depart from the plan's demand.",
    )
    replan_threshold = models.FloatField(
        "early re-plan: departure",
        default=SchedulerConfig.replan_threshold,
        validators=[MinValueValidator(0.01)],
        help_text="Re-solve early when the arrival rate since the last plan departs from its demand by more "
        "than this fraction (0.3: 30 %).",
    )
    replan_min_gap_s = models.FloatField(
        "early re-plan: minimum gap (s)",
        default=SchedulerConfig.replan_min_gap_s,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds between two solves at least, so that a re-plan does not chase the noise of a short window.",
    )
    pressure_replan = models.BooleanField(
        "re-plan on queue pressure",
        default=SchedulerConfig.pressure_replan,
        help_text="Also re-solve early when a request finds its planned level's queue too long for its deadline.",
    )
    backlog_aware = models.BooleanField(
        "plan for the backlog",
        default=SchedulerConfig.backlog_aware,
        help_text="The controller plans for the arrivals plus draining the requests already queued.",
    )
    backlog_horizon_periods = models.FloatField(
        "backlog horizon (periods)",
        default=SchedulerConfig.backlog_horizon_periods,
        validators=[MinValueValidator(0.1)],
        help_text="The queued requests are planned to drain within this many controller periods.",
    )
    queue_first = models.BooleanField(
        "queue-first light load",
        default=SchedulerConfig.queue_first,
        help_text="While the plan puts every worker at K′ = 0, route every request at K′ = 0 to the worker free "
        "soonest for as long as it can still finish by the deadline; the first request that cannot ends it, "
        "re-plans at once, and the rows it queued take the new plan's levels.",
    )
    similarity_ranked = models.BooleanField(
        "similarity-ranked routing",
        default=SchedulerConfig.similarity_ranked,
        help_text="Within a K* class, the most similar prompts take the plan's highest K′ (least quality lost); "
        "off: each request draws its level at random with the plan's fractions.",
    )
    deadline_redirect = models.BooleanField(
        "deadline redirect",
        default=SchedulerConfig.deadline_redirect,
        help_text="A request whose planned level cannot finish it by its deadline goes to the level of least "
        "quality loss that can.",
    )
    shed_hopeless = models.BooleanField(
        "shed hopeless requests",
        default=SchedulerConfig.shed_hopeless,
        help_text="A worker ends a queued request that can no longer meet its deadline as shed (a violation) "
        "instead of spending a GPU on it; off: it is served late.",
    )
    light_load_upgrade = models.BooleanField(
        "upgrades on spare capacity",
        default=SchedulerConfig.light_load_upgrade,
        help_text="Serve a request at a better level than the plan's when the plan leaves capacity idle.",
    )
    upgrade_budget_slo = models.FloatField(
        "upgrade budget (SLOs)",
        null=True,
        blank=True,
        default=SchedulerConfig.upgrade_budget_slo,
        validators=[MinValueValidator(0.0)],
        help_text="Spare worker-seconds the upgrades may bank, in SLOs' worth. Blank: no bank, any upgrade that "
        "meets the margin while the plan has spare capacity (more quality, more violations in a burst).",
    )
    upgrade_margin = models.FloatField(
        "upgrade margin (SLOs)",
        default=SchedulerConfig.upgrade_margin,
        validators=[MinValueValidator(0.0)],
        help_text="An upgraded request must still finish this many SLOs before its deadline.",
    )
    batch_cut = models.BooleanField(
        default=SchedulerConfig.batch_cut,
        help_text="A worker runs a shorter batch when the full one would make a member late, if the members "
        "left out and the rows queued behind still make their deadlines.",
    )
    batch_cut_overload = models.FloatField(
        "batch cut: overload factor",
        default=SchedulerConfig.batch_cut_overload,
        validators=[MinValueValidator(1.0)],
        help_text="No batch cut while the plan's demand exceeds what it serves by this factor (a sustained "
        "overload, where every worker-second is a request served).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    # prompt_aware's levers above, in the admin's order: its fieldset shows them, and the serving app maps each
    # to the SchedulerConfig setting of the same name (webapp/serving/live_config.py).
    PROMPT_AWARE_LEVERS: tuple[str, ...] = (
        "demand_estimate",
        "event_replan",
        "replan_threshold",
        "replan_min_gap_s",
        "pressure_replan",
        "backlog_aware",
        "backlog_horizon_periods",
        "queue_first",
        "similarity_ranked",
        "deadline_redirect",
        "shed_hopeless",
        "light_load_upgrade",
        "upgrade_budget_slo",
        "upgrade_margin",
        "batch_cut",
        "batch_cut_overload",
    )

    # Checks other apps add (serving: "recovery from a crash beats expiry"), run by clean(); the ledger
    # cannot import them, so they register themselves when their app is ready.
    EXTRA_CHECKS: list = []

    class Meta:
        verbose_name = "serving configuration"
        verbose_name_plural = "serving configuration"

    def __str__(self) -> str:
        return "Serving configuration"

    def slo_for(self, priority: str) -> float:
        """The SLO of a priority class, in seconds."""
        return self.batch_slo_seconds if priority == Priority.BATCH else self.slo_seconds

    @property
    def level_list(self) -> list[int]:
        return sorted({int(x) for x in self.k_levels.split(",") if x.strip()})

    @property
    def threshold_pairs(self) -> tuple[tuple[float, int], ...]:
        pairs = []
        for item in self.thresholds.split(","):
            s, k = item.split(":")
            pairs.append((float(s), int(k)))
        return tuple(sorted(pairs, reverse=True))

    @property
    def layout_list(self) -> list[int] | None:
        if not self.manual_layout.strip():
            return None
        return [int(x) for x in self.manual_layout.split(",")]

    @property
    def allowed_size_list(self) -> list[int]:
        return sorted({int(s) for s in self.allowed_sizes.split(",") if s.strip()})

    def clean(self) -> None:
        try:
            sizes = self.allowed_size_list
        except ValueError:
            raise ValidationError({"allowed_sizes": "Use whole numbers separated by commas, e.g. 64,512."}) from None
        if not sizes:
            raise ValidationError({"allowed_sizes": "List at least one size."})
        bad = [s for s in sizes if s <= 0 or s % 8]
        if bad:
            raise ValidationError({"allowed_sizes": f"Sizes must be positive multiples of 8: {bad}."})
        if self.default_size not in sizes:
            raise ValidationError({"default_size": f"The default size must be one of {sizes}."})
        slos = (self.slo_seconds, self.batch_slo_seconds)
        if None not in slos and slos[1] < slos[0]:
            raise ValidationError(
                {
                    "batch_slo_seconds": f"The batch SLO ({slos[1]:g} s) must be at least the interactive "
                    f"SLO ({slos[0]:g} s): batch requests wait behind interactive ones."
                }
            )
        if self.min_steps > self.max_steps:
            raise ValidationError({"min_steps": "Minimum steps cannot exceed maximum steps."})
        if not self.min_steps <= self.default_steps <= self.max_steps:
            raise ValidationError({"default_steps": "Default steps must lie between min and max."})
        self._clean_scheduling()
        self._clean_model_variants()
        for check in self.EXTRA_CHECKS:
            check(self)

    def _clean_scheduling(self) -> None:
        try:
            levels = self.level_list
        except ValueError:
            raise ValidationError(
                {"k_levels": "Use whole numbers separated by commas, e.g. 0,5,10,15,20,25."}
            ) from None
        if 0 not in levels or any(k < 0 or k >= self.default_steps for k in levels):
            raise ValidationError(
                {"k_levels": f"Levels must include 0 and lie below the step count ({self.default_steps})."}
            )
        try:
            pairs = self.threshold_pairs
        except ValueError:
            raise ValidationError(
                {"thresholds": "Use 'similarity:K' pairs separated by commas, e.g. 0.95:25,0.90:20."}
            ) from None
        bad = [k for _, k in pairs if k not in levels]
        if bad or any(not 0 <= s <= 1 for s, _ in pairs):
            raise ValidationError(
                {
                    "thresholds": f"Similarities must lie in [0, 1] and every K must be one "
                    f"of the levels {levels} (unknown: {bad})."
                }
            )
        raw = self.manual_layout.strip()
        if raw:
            items = [x.strip() for x in raw.split(",")]
            if any(not x for x in items):
                raise ValidationError(
                    {"manual_layout": "The layout has an empty entry; give one level per worker, e.g. 0,0,25,25."}
                )
            try:
                layout = [int(x) for x in items]
            except ValueError:
                raise ValidationError({"manual_layout": "Levels must be whole numbers, e.g. 0,0,25,25."}) from None
            unknown = sorted({k for k in layout if k not in levels})
            if unknown:
                raise ValidationError({"manual_layout": f"Unknown level(s) {unknown}; the levels are {levels}."})
            if len(layout) != settings.T2I_WORKERS:
                raise ValidationError(
                    {
                        "manual_layout": f"The layout names {len(layout)} worker(s) but the "
                        f"cluster has {settings.T2I_WORKERS}."
                    }
                )

    def _clean_model_variants(self) -> None:
        """proteus_models switches workers between model variants (SDXL, SD 1.5, SD-Turbo, …): only emulated
        workers can (they sleep each variant's latency and load time); a real engine holds one model, so the
        policy is refused here rather than served by that one model under other names."""
        if self.policy not in MODEL_VARIANT_POLICIES:
            return
        if settings.T2I_ENGINE != "emulated":
            raise ValidationError(
                {
                    "policy": f"{self.policy} switches workers between model variants, which only emulated "
                    f"workers can do (T2I_ENGINE=emulated); this deployment's engine ({settings.T2I_ENGINE}) "
                    "holds one model. Choose another policy."
                }
            )
        if self.manual_layout.strip():
            raise ValidationError(
                {
                    "manual_layout": f"A manual layout pins K′ levels; {self.policy} chooses a model variant "
                    "per worker by its MILP. Clear the layout to use it."
                }
            )

    @classmethod
    def initial_values(cls) -> dict:
        return dict(
            slo_seconds=settings.T2I_SLO_SECONDS,
            batch_slo_seconds=settings.T2I_BATCH_SLO_SECONDS,
            default_steps=settings.T2I_DEFAULT_STEPS,
            default_size=settings.T2I_DEFAULT_SIZE,
            allowed_sizes=settings.T2I_ALLOWED_SIZES,
            max_in_flight=settings.T2I_MAX_IN_FLIGHT,
        )


class PlanRecordStatus(models.TextChoices):
    """What became of one controller run. Only the first three can be the current plan."""

    OK = "ok", "solved"
    FIXED = "fixed", "fixed (policy without a controller)"
    MANUAL = "manual", "manual K layout"
    FAILED = "failed", "failed (previous plan kept)"
    SLOW = "slow", "slower than the limit (previous plan kept)"


class AllocationPlan(models.Model):
    """One controller decision (or a manual layout), versioned by its id. The newest row whose
    status is usable is the current plan; a failed solve is recorded but never becomes current."""

    USABLE = (PlanRecordStatus.OK, PlanRecordStatus.FIXED, PlanRecordStatus.MANUAL)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    policy = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=PlanRecordStatus.choices)
    message = models.TextField(blank=True, default="", help_text="Solver status and any problem.")
    inputs = models.JSONField(default=dict, help_text="Demand estimate and configuration.")
    solution = models.JSONField(default=dict, help_text="scheduler.planner.Plan.to_dict().")
    worker_levels = models.JSONField(default=list)
    expected_quality = models.FloatField(null=True, blank=True)
    utilisation = models.JSONField(default=list)
    solve_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        get_latest_by = "id"

    def __str__(self) -> str:
        return f"plan v{self.id} ({self.policy}, {self.status})"

    @property
    def usable(self) -> bool:
        return self.status in self.USABLE

    @classmethod
    def current(cls) -> AllocationPlan | None:
        return cls.objects.filter(status__in=cls.USABLE).order_by("-id").first()


class BatchRecord(models.Model):
    """Service time of every batch a worker ran: kept so the latency profile can be checked."""

    finished_at = models.DateTimeField(auto_now_add=True, db_index=True)
    worker = models.PositiveSmallIntegerField()
    k_prime = models.PositiveSmallIntegerField()
    batch_size = models.PositiveSmallIntegerField()
    service_seconds = models.FloatField()
    engine = models.CharField(max_length=32)
    plan_version = models.PositiveIntegerField(null=True, blank=True)
    # proteus_models: the model variant that ran the batch (k_prime is its index) and the seconds the worker
    # spent loading it just before (the plan had switched it; it served nothing meanwhile). Blank/null otherwise.
    model_variant = models.CharField(max_length=32, blank=True, default="")
    load_seconds = models.FloatField(
        null=True, blank=True, help_text="Seconds spent loading the model variant before this batch."
    )
    # Seconds the batch held its worker besides the engine's service time: the claim, the cached latents'
    # load, the images' saving and the ledger writes (webapp/serving/batch_overhead.py). Null: not measured.
    overhead_seconds = models.FloatField(
        null=True, blank=True, help_text="Seconds the batch held its worker besides generating (claim, saving)."
    )
