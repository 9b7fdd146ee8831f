"""`/metrics`: Prometheus text exposition from a custom collector that reads the same aggregates
as the dashboard (`metrics_queries`). Nothing is kept in process memory, so every web process
answers the same numbers and no multiprocess mode is needed.

Access (documented in docs/dashboard.md): logged-in staff, or, when `settings.T2I_METRICS_TOKEN`
(env T2I_METRICS_TOKEN) is set, a request carrying `Authorization: Bearer <token>`. Nobody else, and
no exemption for loopback clients: behind a reverse proxy on the same host every client is 127.0.0.1.
"""

from __future__ import annotations

import hmac
import logging
import time

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from webapp.ledger.models import TERMINAL_STATES, AllocationPlan, ServingConfig

from . import metrics_queries as mq
from .process_metrics import ProcessCollector

log = logging.getLogger(__name__)

PREFIX = "t2i"


def metrics_window() -> str:
    return settings.T2I_METRICS_WINDOW  # one of the dashboard's windows (checked at start)


class ServingCollector(Collector):
    """Reads Postgres on every scrape (a handful of aggregate queries)."""

    def describe(self):
        return []  # no fixed description: metric families depend on the data (levels, workers)

    def collect(self):
        started = time.perf_counter()
        try:
            families = list(self._families())
            up = 1
        except DatabaseError as exc:
            log.error("metrics: database unavailable: %s", exc)
            families, up = [], 0
        yield from families
        yield GaugeMetricFamily(f"{PREFIX}_database_up", "1 if the ledger database answered this scrape.", value=up)
        yield GaugeMetricFamily(
            f"{PREFIX}_scrape_duration_seconds",
            "Time spent computing these metrics.",
            value=time.perf_counter() - started,
        )

    def _families(self):
        config = ServingConfig.current()
        totals = mq.lifetime_totals()

        # --- counters (monotonic: rows are kept, terminal states are final) ---------------
        yield CounterMetricFamily(f"{PREFIX}_requests", "Requests accepted (rows created).", value=totals["created"])
        fin = CounterMetricFamily(
            f"{PREFIX}_requests_finished", "Requests that reached a terminal state, by state.", labels=["status"]
        )
        for status in TERMINAL_STATES:
            fin.add_metric([str(status)], totals["by_status"].get(str(status), 0))
        yield fin
        yield CounterMetricFamily(
            f"{PREFIX}_requests_on_time", "Requests that succeeded by their deadline.", value=totals["on_time"]
        )
        yield CounterMetricFamily(
            f"{PREFIX}_requests_cache_hits", "Requests with a cache neighbour and K* > 0.", value=totals["cache_hits"]
        )
        yield CounterMetricFamily(
            f"{PREFIX}_requests_redirected",
            "Requests the dispatcher redirected to meet their deadline.",
            value=totals["redirects"],
        )
        served = CounterMetricFamily(
            f"{PREFIX}_requests_served", "Succeeded requests by the level K′ they were served at.", labels=["k_prime"]
        )
        for k, n in sorted(totals["served_by_k"].items()):
            served.add_metric([str(k)], n)
        yield served
        yield SummaryMetricFamily(
            f"{PREFIX}_served_quality",
            "Expected quality Q(s, K′) of succeeded requests (sum and count).",
            count_value=totals["quality_count"],
            sum_value=totals["quality_sum"],
        )
        batches = SummaryMetricFamily(
            f"{PREFIX}_batch_service_seconds",
            "Service time of worker batches (count = batches run).",
            labels=["worker", "k_prime"],
        )
        batch_requests = CounterMetricFamily(
            f"{PREFIX}_batch_requests", "Requests served in worker batches.", labels=["worker", "k_prime"]
        )
        for b in mq.batch_totals():
            lbl = [str(b["worker"]), str(b["k_prime"])]
            batches.add_metric(lbl, count_value=b["batches"], sum_value=b["seconds"])
            batch_requests.add_metric(lbl, b["requests"])
        yield batches
        yield batch_requests

        # --- gauges: now ---------------------------------------------------------------------
        active = GaugeMetricFamily(f"{PREFIX}_requests_active", "Requests queued or running now.", labels=["status"])
        for status in ("queued", "running"):
            active.add_metric([status], totals["by_status"].get(status, 0))
        yield active

        plan = mq.plan_dict(AllocationPlan.current())
        workers = mq.workers_view(plan, config)
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Rows queued for each worker (queue gpu.N).", labels=["worker"]
        )
        running = GaugeMetricFamily(f"{PREFIX}_worker_running", "Rows running on each worker.", labels=["worker"])
        level = GaugeMetricFamily(
            f"{PREFIX}_worker_level", "K level of each worker in the current plan.", labels=["worker"]
        )
        for row in workers["rows"]:
            depth.add_metric([str(row["worker"])], row["queued"])
            running.add_metric([str(row["worker"])], row["running"])
            if row["level"] is not None:
                level.add_metric([str(row["worker"])], row["level"])
        yield depth
        yield running
        yield level
        yield GaugeMetricFamily(f"{PREFIX}_workers", "Configured worker (GPU) count.", value=settings.T2I_WORKERS)
        yield GaugeMetricFamily(f"{PREFIX}_slo_seconds", "The SLO: deadline = arrival + SLO.", value=config.slo_seconds)
        yield InfoMetricFamily(f"{PREFIX}_serving", "Active serving policy.", value={"policy": config.policy})
        if plan is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_plan_version", "Version (id) of the current plan.", value=plan["version"]
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_plan_manual",
                "1 if the current plan is the admin's manual K layout.",
                value=int(plan["manual"]),
            )
            yield InfoMetricFamily(
                f"{PREFIX}_plan",
                "Current plan's policy and status.",
                value={"policy": plan["policy"], "status": plan["status"], "version": str(plan["version"])},
            )
            if plan["expected_quality"] is not None:
                yield GaugeMetricFamily(
                    f"{PREFIX}_plan_expected_quality",
                    "Expected quality of the current plan.",
                    value=plan["expected_quality"],
                )
            if plan["solve_ms"] is not None:
                yield GaugeMetricFamily(
                    f"{PREFIX}_plan_solve_seconds", "Solve time of the current plan.", value=plan["solve_ms"] / 1000
                )
            if plan["created_ts"] is not None:
                yield GaugeMetricFamily(
                    f"{PREFIX}_plan_created_timestamp_seconds",
                    "When the current plan was stored (Unix time).",
                    value=plan["created_ts"],
                )
            if plan["utilisation"] and len(plan["utilisation"]) == len(plan["levels"]):
                util = GaugeMetricFamily(
                    f"{PREFIX}_plan_utilisation", "Planned load / capacity per level.", labels=["k_prime"]
                )
                for k, u in zip(plan["levels"], plan["utilisation"]):
                    util.add_metric([str(k)], u)
                yield util

        # --- gauges over the last window -------------------------------------------------------
        wname = metrics_window()
        w = mq.resolve_window(wname, slo_seconds=config.slo_seconds)
        s = mq.window_summary(w)

        def windowed(name, doc, value):
            if value is None:
                return None
            g = GaugeMetricFamily(f"{PREFIX}_window_{name}", f"{doc} (last window).", labels=["window"])
            g.add_metric([wname], value)
            return g

        for fam in (
            windowed("arrival_rate", "Arrivals per second", s["arrival_rate"]),
            windowed("on_time_throughput", "Requests finished by their deadline per second", s["on_time_throughput"]),
            windowed(
                "slo_violation_ratio", "(decided - on time) / decided requests that arrived", s["violation_ratio"]
            ),
            windowed("effective_quality", "Mean quality of requests served", s["effective_quality"]),
            windowed("cache_hit_ratio", "Share of arrivals with a neighbour and K* > 0", s["cache_hit_rate"]),
            windowed("redirect_ratio", "Share of arrivals redirected", s["redirect_rate"]),
            windowed("decided_requests", "Arrivals whose outcome is known (not cancelled)", s["decided"]),
        ):
            if fam is not None:
                yield fam
        lat = GaugeMetricFamily(
            f"{PREFIX}_window_latency_seconds",
            "End-to-end latency quantiles of requests served (last window).",
            labels=["window", "quantile"],
        )
        for q, key in (("0.5", "latency_p50"), ("0.95", "latency_p95"), ("0.99", "latency_p99")):
            if s[key] is not None:
                lat.add_metric([wname, q], s[key])
        yield lat
        share = GaugeMetricFamily(
            f"{PREFIX}_window_k_prime_share",
            "Share of arrivals at each served level K′ (last window).",
            labels=["window", "k_prime"],
        )
        for row in mq.k_mix(w, "k_served"):
            share.add_metric([wname, str(row["k"])], row["share"])
        yield share


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(ServingCollector())
REGISTRY.register(ProcessCollector())  # supervisor's processes and live GPU workers


def _denied(request) -> HttpResponse | None:
    """None when the request may scrape; else the 401/403 answer."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return None
    token = getattr(settings, "T2I_METRICS_TOKEN", "") or ""
    if token:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return HttpResponse(
            "Unauthorized: send Authorization: Bearer <T2I_METRICS_TOKEN>, or log in as staff.\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return HttpResponse(
        "Forbidden: /metrics is for staff; set T2I_METRICS_TOKEN to scrape it with a bearer token.\n",
        status=403,
        content_type="text/plain",
    )


@require_GET
def metrics_view(request):
    denied = _denied(request)
    if denied is not None:
        return denied
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
