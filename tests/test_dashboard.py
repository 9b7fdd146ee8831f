"""SLO dashboard and /metrics: aggregates computed in Postgres from a known set of ledger rows,
staff-only access, PNG charts, Prometheus text that parses, and the manual K layout on the page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import make_request, serving_config
from webapp.ledger.models import AllocationPlan, BatchRecord, GenerationRequest, Status

pytestmark = pytest.mark.django_db  # plain: no other process reads these rows; each test is rolled back

LEVELS = [0, 5, 10, 15, 20, 25]
S = timedelta(seconds=1)

# (name, created seconds ago, status, finished after creation (s) or None, k_star, k_served,
#  neighbour?, quality, worker). The deadline is always arrival + 30 s.
ROWS = [
    ("on-time-k0", 600, Status.SUCCEEDED, 5, 0, 0, False, 1.0, 0),
    ("on-time-k25", 500, Status.SUCCEEDED, 10, 25, 25, True, 0.9, 1),
    ("on-time-k10", 400, Status.SUCCEEDED, 20, 10, 10, True, 0.95, 0),
    ("late-k25", 300, Status.SUCCEEDED, 60, 25, 25, True, 0.8, 1),
    ("expired-k20", 250, Status.EXPIRED, 60, 20, 20, True, None, 0),
    ("failed-k0", 200, Status.FAILED, 3, 5, 0, True, None, 1),
    ("cancelled", 150, Status.CANCELLED, 2, 0, 0, False, None, 0),
    ("queued-fresh", 5, Status.QUEUED, None, 0, 25, False, None, 1),
    ("queued-overdue", 100, Status.QUEUED, None, 0, 25, False, None, 0),
    ("running-fresh", 10, Status.RUNNING, None, 10, 10, True, None, 1),
    # Outside a 15-minute window:
    ("two-hours-old", 7200, Status.SUCCEEDED, 5, 0, 0, False, 0.5, 0),
    # Arrived just before the 15-minute window, finished (on time) inside it.
    ("finished-inside", 910, Status.SUCCEEDED, 20, 15, 15, True, 0.7, 1),
]
# Expected, 15-minute window (see ROWS):
#   arrivals 10 (the first ten); cancelled 1; decided 7 (terminal or overdue, not cancelled);
#   on time 3; violations 4 (late, expired, failed, overdue) → ratio 4/7; pending 2;
#   cache hits 6 of 10 (neighbour and K* > 0: k25, k10, late, expired, failed(K*=5), running);
#   K′ mix 0:3, 10:2, 20:1, 25:4 of 10; finished in window on time: 3 + "finished-inside" = 4;
#   served in window: 5, quality (1.0 + 0.9 + 0.95 + 0.8 + 0.7) / 5 = 0.87;
#   served latencies 5, 10, 20, 60, 20 → p50 = 20.


@pytest.fixture
def ledger(embedded_services, django_user_model):
    owner = django_user_model.objects.create_user("loadgen", password="pw-loadgen-123")
    now = timezone.now()
    ids = {}
    for name, ago, status, took, k_star, k_served, hit, quality, worker in ROWS:
        created = now - ago * S
        row = make_request(
            owner,
            prompt=name,
            steps=50,
            status=status,
            deadline=created + 30 * S,
            k_star=k_star,
            k_served=k_served,
            worker=worker,
            cache_neighbor_id=7 if hit else None,
            similarity=0.96 if hit else 0.2,
            quality=quality,
            batch_size=1,
            redirected=(name == "late-k25"),
            service_seconds=1.5 if status == Status.SUCCEEDED else None,
        )
        GenerationRequest.objects.filter(pk=row.pk).update(
            created_at=created,
            started_at=(
                created + (took - 1.5) * S
                if status == Status.SUCCEEDED
                else created + 2 * S
                if status == Status.RUNNING
                else None
            ),
            finished_at=created + took * S if took is not None else None,
        )
        ids[name] = row.pk
    BatchRecord.objects.create(worker=0, k_prime=0, batch_size=2, service_seconds=1.25, engine="emulated")
    BatchRecord.objects.create(worker=0, k_prime=0, batch_size=1, service_seconds=0.75, engine="emulated")
    return ids


@pytest.fixture
def manual_plan(embedded_services):
    """An older solver plan, the current manual layout, and a newer failed solve (never current)."""
    from scheduler.planner import Plan

    def solution(worker_levels, status):
        route = [[1.0 if k == (25 if ks >= 25 else 0) else 0.0 for k in LEVELS] for ks in LEVELS]
        return Plan(
            levels=LEVELS,
            worker_levels=worker_levels,
            route=route,
            batch_size={k: (4 if k == 25 else 2) for k in LEVELS},
            workers_per_level=[worker_levels.count(k) for k in LEVELS],
            capacity=[1.0] * 6,
            utilisation=[0.5, 0, 0, 0, 0, 0.25],
            expected_quality=0.9312,
            status=status,
            policy="prompt_aware",
        ).to_dict()

    AllocationPlan.objects.create(
        policy="prompt_aware",
        status="ok",
        message="Optimal",
        solution=solution([0, 0], "optimal"),
        worker_levels=[0, 0],
        expected_quality=0.99,
        utilisation=[0.5] * 6,
        solve_ms=12.5,
    )
    serving_config(manual_layout="0,25")
    manual = AllocationPlan.objects.create(
        policy="prompt_aware",
        status="manual",
        message="Manual K layout from the admin.",
        solution=solution([0, 25], "manual"),
        worker_levels=[0, 25],
        expected_quality=0.9312,
        utilisation=[0.5, 0, 0, 0, 0, 0.25],
        solve_ms=0.0,
    )
    AllocationPlan.objects.create(policy="prompt_aware", status="failed", message="Solve raised RuntimeError: boom")
    return manual


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password="pw-ops-123", is_staff=True)


def test_window_aggregates_are_computed_in_postgres(ledger, manual_plan):
    from webapp.dashboard import metrics_queries as mq

    snap = mq.snapshot("15m")
    s = snap["summary"]
    assert (s["arrivals"], s["cancelled"], s["decided"], s["on_time"]) == (10, 1, 7, 3)
    assert (s["late"], s["failed"], s["expired"], s["overdue"], s["pending"]) == (1, 1, 1, 1, 2)
    assert s["violations"] == 4 and s["violation_ratio"] == pytest.approx(4 / 7)
    assert s["arrival_rate"] == pytest.approx(10 / 900)
    assert s["on_time_finished"] == 4 and s["on_time_throughput"] == pytest.approx(4 / 900)
    assert s["served"] == 5 and s["effective_quality"] == pytest.approx(0.87)
    assert s["cache_hits"] == 6 and s["cache_hit_rate"] == pytest.approx(0.6)
    assert s["redirects"] == 1 and s["redirect_rate"] == pytest.approx(0.1)
    assert s["latency_p50"] == pytest.approx(20.0)
    assert s["mean_service"] == pytest.approx(1.5)
    assert s["mean_queue_wait"] == pytest.approx((3.5 + 8.5 + 18.5 + 58.5 + 18.5) / 5)
    assert [(m["k"], m["count"]) for m in snap["k_mix"]] == [(0, 3), (10, 2), (20, 1), (25, 4)]
    assert [m["share"] for m in snap["k_mix"]] == pytest.approx([0.3, 0.2, 0.1, 0.4])

    workers = snap["workers"]
    assert workers["manual"] and workers["source"] == "manual" and not workers["manual_pending"]
    assert [(w["worker"], w["level"], w["queued"], w["running"]) for w in workers["rows"]] == [
        (0, 0, 1, 0),
        (1, 25, 1, 1),
    ]
    assert snap["plan"]["version"] == manual_plan.id and snap["plan"]["batch_size"][25] == 4
    assert [p["status"] for p in snap["recent_plans"]] == ["failed", "manual", "ok"]

    # The 24-hour window sees the two-hours-old row and the one that arrived before 15 minutes.
    day = mq.snapshot("24h")["summary"]
    assert day["arrivals"] == 12 and day["on_time"] == 5 and day["decided"] == 9

    # Time series add up to the window's totals.
    ts = mq.time_series(mq.resolve_window("15m"))
    assert len(ts["arrivals"]) == mq.BUCKETS
    assert (sum(ts["arrivals"]), sum(ts["decided"]), sum(ts["violations"]), sum(ts["on_time"])) == (10, 7, 4, 4)
    mix = mq.mix_series(mq.resolve_window("15m"))
    assert {k: sum(v) for k, v in mix["counts"].items()} == {0: 3, 10: 2, 20: 1, 25: 4}
    queues = mq.queue_series(mq.resolve_window("15m"))
    assert queues["depth"][0][-1] == 1 and queues["depth"][1][-1] == 1  # waiting right now


def test_dashboard_is_staff_only(client, ledger, django_user_model, staff):
    urls = ["/dashboard/", "/dashboard/data.json", "/dashboard/charts/rates.png"]
    for url in urls:
        resp = client.get(url)
        assert resp.status_code == 302 and "/accounts/login/" in resp["Location"], url
    client.force_login(django_user_model.objects.create_user("eve", password="pw-eve-12345"))
    for url in urls:
        assert client.get(url).status_code == 403, url
    client.force_login(staff)
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_page_shows_numbers_and_manual_layout(client, ledger, manual_plan, staff):
    client.force_login(staff)
    html = client.get("/dashboard/?window=15m").content.decode()
    assert "manual K layout" in html and f'data-key="plan.version">{manual_plan.id}<' in html
    assert "57.1%" in html  # violation ratio 4/7
    assert "0.870" in html  # effective quality
    assert "60.0%" in html  # cache hit rate
    assert "40.0%" in html  # share of K′ = 25
    assert "gpu.1" in html and "Route fractions" in html and "0.9312" in html
    assert "Solve raised RuntimeError" in html  # the failed solve is listed, not current
    assert 'src="/dashboard/charts/mix.png?window=15m"' in html
    scripts = re.findall(r"<script[^>]*>", html)  # our own static files only: no CDN, no inline script (CSP)
    assert scripts and all('src="/static/' in tag for tag in scripts) and "cdn" not in html.lower()
    # A layout set in the admin but not yet applied is flagged.
    serving_config(manual_layout="25,25")
    html = client.get("/dashboard/").content.decode()
    assert "manual layout 25,25 set in the admin" in html
    # An unknown window falls back to the default on the page; the JSON endpoint refuses it.
    assert client.get("/dashboard/?window=7d").status_code == 200
    assert client.get("/dashboard/data.json?window=7d").status_code == 400


def test_json_endpoint_carries_the_aggregates(client, ledger, manual_plan, staff):
    client.force_login(staff)
    data = client.get("/dashboard/data.json?window=15m").json()
    assert data["window"] == "15m" and data["summary"]["violation_ratio"] == pytest.approx(4 / 7)
    assert data["summary"]["effective_quality"] == pytest.approx(0.87)
    assert data["workers"]["manual"] is True and data["plan"]["worker_levels"] == [0, 25]


def test_charts_render_png(client, ledger, manual_plan, staff):
    client.force_login(staff)
    for name in ("rates", "violations", "quality", "mix", "queues"):
        resp = client.get(f"/dashboard/charts/{name}.png?window=15m")
        assert resp.status_code == 200 and resp["Content-Type"] == "image/png", name
        assert resp.content[:8] == b"\x89PNG\r\n\x1a\n" and len(resp.content) > 5000, name
    assert client.get("/dashboard/charts/nope.png").status_code == 404
    assert client.get("/dashboard/charts/rates.png?window=7d").status_code == 400


def _samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@override_settings(T2I_METRICS_WINDOW="15m", T2I_METRICS_TOKEN="scrape-token")
def test_metrics_endpoint_parses_and_carries_values(client, ledger, manual_plan):
    resp = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token")
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/plain")
    m = _samples(resp.content.decode())
    assert m[("t2i_database_up", ())] == 1
    assert m[("t2i_requests_total", ())] == 12
    assert m[("t2i_requests_finished_total", (("status", "succeeded"),))] == 6
    assert m[("t2i_requests_finished_total", (("status", "expired"),))] == 1
    assert m[("t2i_requests_finished_total", (("status", "cancelled"),))] == 1
    assert m[("t2i_requests_on_time_total", ())] == 5
    assert m[("t2i_requests_served_total", (("k_prime", "25"),))] == 2
    assert m[("t2i_served_quality_count", ())] == 6
    assert m[("t2i_served_quality_sum", ())] == pytest.approx(4.85)
    assert m[("t2i_requests_active", (("status", "queued"),))] == 2
    assert m[("t2i_queue_depth", (("worker", "0"),))] == 1
    assert m[("t2i_worker_running", (("worker", "1"),))] == 1
    assert m[("t2i_worker_level", (("worker", "1"),))] == 25
    assert m[("t2i_plan_version", ())] == manual_plan.id and m[("t2i_plan_manual", ())] == 1
    assert m[("t2i_plan_expected_quality", ())] == pytest.approx(0.9312)
    assert m[("t2i_batch_service_seconds_count", (("k_prime", "0"), ("worker", "0")))] == 2
    assert m[("t2i_batch_service_seconds_sum", (("k_prime", "0"), ("worker", "0")))] == 2.0
    assert m[("t2i_batch_requests_total", (("k_prime", "0"), ("worker", "0")))] == 3
    w = (("window", "15m"),)
    assert m[("t2i_window_slo_violation_ratio", w)] == pytest.approx(4 / 7)
    assert m[("t2i_window_effective_quality", w)] == pytest.approx(0.87)
    assert m[("t2i_window_cache_hit_ratio", w)] == pytest.approx(0.6)
    assert m[("t2i_window_on_time_throughput", w)] == pytest.approx(4 / 900)
    assert m[("t2i_window_k_prime_share", (("k_prime", "25"), ("window", "15m")))] == pytest.approx(0.4)
    assert m[("t2i_window_latency_seconds", (("quantile", "0.5"), ("window", "15m")))] == 20


def test_metrics_access(client, embedded_services, staff, django_user_model):
    # No loopback exemption: a reverse proxy on the same host makes every client 127.0.0.1.
    for addr in ("127.0.0.1", "::1", "10.1.2.3"):
        assert client.get("/metrics", REMOTE_ADDR=addr).status_code == 403, addr
    with override_settings(T2I_METRICS_TOKEN="s3cret"):
        for addr in ("127.0.0.1", "10.1.2.3"):
            assert client.get("/metrics", REMOTE_ADDR=addr).status_code == 401, addr
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        resp = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret")
        assert resp.status_code == 200 and b"t2i_requests_total" in resp.content
        client.force_login(django_user_model.objects.create_user("not-staff", password="pw-not-staff-1"))
        assert client.get("/metrics").status_code == 401  # logged in is not enough
    client.force_login(staff)
    for addr in ("127.0.0.1", "10.1.2.3"):
        assert client.get("/metrics", REMOTE_ADDR=addr).status_code == 200, addr
