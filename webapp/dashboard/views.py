"""Staff-only SLO dashboard: the page, its JSON snapshot (polled by the page) and PNG charts."""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from webapp.ledger.models import ServingConfig
from webapp.serving.cluster_state import live_workers
from webapp.serving.live_config import recovery_for

from . import metrics_queries as mq
from .process_status import read_processes

REFRESH_SECONDS = 5  # numbers
CHART_REFRESH_SECONDS = 30  # images


def staff_required(view):
    """Anonymous → login page; logged in without is_staff → 403."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied("The dashboard is for staff.")
        return view(request, *args, **kwargs)

    return wrapped


# (key in the summary, label, format, explanation): the headline cards, in page order.
CARDS = [
    ("arrival_rate", "Arrival rate", "rate", "requests arrived per second"),
    ("on_time_throughput", "On-time throughput", "rate", "finished by their deadline, per second"),
    ("violation_ratio", "SLO violation ratio", "pct", "(decided − on time) / decided arrivals"),
    ("effective_quality", "Effective quality", "q", "mean Q of requests served"),
    # Issue 15: with the demo model the scorer measures what the yardstick only estimates.
    (
        "measured_adherence",
        "Measured adherence (demo model)",
        "pct",
        "served images whose 4 attributes the scorer reads back",
    ),
    ("scored_quality", "Yardstick Q, same images", "q", "the yardstick's estimate for those images"),
    # Not the simulator's and loadgen's "hit rate" (served requests that ran at K′ > 0): this counts arrivals
    # that *could* resume (K* > 0), before the policy picks K′ (docs/dashboard.md).
    ("cache_hit_rate", "Cache match rate", "pct", "arrivals with a neighbour and K* > 0 (could resume)"),
    ("redirect_rate", "Redirect rate", "pct", "arrivals redirected to meet the deadline"),
    ("latency_p50", "Latency p50", "s", "end-to-end, requests served"),
    ("latency_p95", "Latency p95", "s", ""),
    ("latency_p99", "Latency p99", "s", ""),
    ("mean_queue_wait", "Mean queue wait", "s", ""),
    ("mean_service", "Mean service time", "s", "per request, from its batch"),
]
COUNTS = [
    "arrivals",
    "decided",
    "on_time",
    "violations",
    "late",
    "failed",
    "expired",
    "overdue",
    "pending",
    "cancelled",
    "served",
    "on_time_finished",
    "adherence_scored",
]


def fmt(value, kind: str) -> str:
    """Same formats as the page's JavaScript (`fmt` in dashboard/index.html)."""
    if value is None:
        return "–"
    if kind == "rate":
        return f"{value:.3f}/s" if value < 10 else f"{value:.1f}/s"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "q":
        return f"{value:.3f}"
    if kind == "s":
        return f"{value:.2f} s"
    return str(value)


def _plan_signature(plan: dict | None) -> str:
    """What the page's script compares to decide that the plan tables need a reload."""
    if not plan:
        return ""
    return "|".join([plan["policy"], plan["status"], ",".join(str(k) for k in plan["worker_levels"])])


def _route_rows(plan: dict | None) -> list[dict]:
    if not plan or not plan["route"]:
        return []
    return [{"k_star": k, "cells": row} for k, row in zip(plan["levels"], plan["route"])]


def _level_rows(plan: dict | None) -> list[dict]:
    if not plan or not plan["levels"]:
        return []
    out = []
    for j, k in enumerate(plan["levels"]):

        def at(seq, j=j):
            return seq[j] if j < len(seq) else None

        out.append(
            {
                "k": k,
                "workers": at(plan["workers_per_level"]),
                "batch_size": plan["batch_size"].get(k),
                "capacity": at(plan["capacity"]),
                "utilisation": at(plan["utilisation"]),
            }
        )
    return out


def process_tile() -> dict:
    """The tile of processes: the supervisor's status file (make run only), live GPU workers, and the
    recovery timings the current SLO gives (scheduler/recovery.py)."""
    live = live_workers()
    return {
        "processes": read_processes(),
        "gpu_workers": [{"worker": i, "live": i in live} for i in range(settings.T2I_WORKERS)],
        "recovery": recovery_for(ServingConfig.current()),
    }


@require_GET
@staff_required
def dashboard(request):
    name = request.GET.get("window") or mq.DEFAULT_WINDOW
    if name not in mq.WINDOWS:
        name = mq.DEFAULT_WINDOW
    snap = mq.snapshot(name)
    return render(
        request,
        "dashboard/index.html",
        {
            "snap": snap,
            "s": snap["summary"],
            "cards": [
                {"key": k, "label": label, "kind": kind, "help": help_, "text": fmt(snap["summary"][k], kind)}
                for k, label, kind, help_ in CARDS
            ],
            "mix_rows": [{**m, "share_text": fmt(m["share"], "pct")} for m in snap["k_mix"]],
            "plan_signature": _plan_signature(snap["plan"]),
            "counts": [{"key": k, "label": k.replace("_", " "), "value": snap["summary"][k]} for k in COUNTS],
            "plan": snap["plan"],
            "workers": snap["workers"],
            "route_rows": _route_rows(snap["plan"]),
            "level_rows": _level_rows(snap["plan"]),
            "windows": list(mq.WINDOWS),
            "charts": list(CHART_TITLES.items()),
            "refresh_ms": REFRESH_SECONDS * 1000,
            "chart_refresh_ms": CHART_REFRESH_SECONDS * 1000,
            "chart_refresh_s": CHART_REFRESH_SECONDS,
            **process_tile(),
        },
    )


@require_GET
@staff_required
def data(request):
    try:
        snap = mq.snapshot(request.GET.get("window"))
    except mq.UnknownWindow as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    return JsonResponse(snap, headers={"Cache-Control": "no-store"})


CHART_TITLES = {
    "rates": "Arrivals and on-time throughput",
    "violations": "SLO violation ratio",
    "quality": "Effective quality",
    "mix": "Per-K′ mix",
    "queues": "Queue depth per worker",
}


@require_GET
@staff_required
def chart(request, name: str):
    from . import charts  # matplotlib is imported only when a chart is asked for

    render_chart = charts.CHARTS.get(name)
    if render_chart is None:
        raise Http404("No such chart.")
    try:
        window = mq.resolve_window(request.GET.get("window"))
    except mq.UnknownWindow as exc:
        return HttpResponseBadRequest(str(exc))
    # The page adds ?window=…&t=… so each window/refresh is its own URL; a short private cache
    # is enough.
    return HttpResponse(
        render_chart(window), content_type="image/png", headers={"Cache-Control": "private, max-age=10"}
    )
