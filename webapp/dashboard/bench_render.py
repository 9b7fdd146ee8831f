"""How long the dashboard takes to render with a large ledger (issue 12, item 8): a measurement, not a test.

    .venv/bin/python -m webapp.dashboard.bench_render --rows 100000 --repeat 5

Starts its own PostgreSQL and Redis in a temporary folder (nothing of `make run` is touched), migrates, seeds
ROWS requests in one INSERT … SELECT (spread evenly over the last --hours, statuses, K′ levels, cache hits and
lateness mixed as a loaded day would have them), then renders the page (`GET /dashboard/?window=…`, as staff,
Django's test client in this process: views, SQL and template, no network) for every window, and its JSON and
one chart. Prints the median and worst of --repeat renders per window, and PostgreSQL's plan of the heaviest
query (the 24 h summary).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

# Every row is one arrival of the seeded day: i spreads them evenly, the modulos mix what the dashboard counts.
SEED_SQL = """
INSERT INTO ledger_generationrequest (
    id, owner_id, prompt, negative_prompt, seed, width, height, steps, guidance_scale, status, priority, error,
    attempts, publish_count, created_at, accepted_at, published_at, started_at, finished_at, deadline, image,
    thumbnail, model_label, k_star, k_served, worker, plan_version, redirected, cache_neighbor_id,
    cache_neighbor_prompt, cache_neighbor_same_owner, similarity, batch_size, service_seconds, quality, favourite
)
SELECT
    gen_random_uuid(), %(owner)s, 'seeded prompt ' || i, '', i, 512, 512, 50, 7.5,
    (ARRAY['succeeded','succeeded','succeeded','succeeded','succeeded','succeeded','failed','cancelled',
           'expired','succeeded'])[1 + i %% 10],
    CASE WHEN i %% 7 = 0 THEN 'batch' ELSE 'interactive' END, '', 1, 1,
    t, t, t, t + interval '2 seconds', t + (i %% 40) * interval '1 second', t + interval '30 seconds', '', '', '',
    (ARRAY[0,5,10,15,20,25])[1 + i %% 6], (ARRAY[0,5,10,15,20,25])[1 + i %% 6], i %% 4, 1, i %% 11 = 0,
    CASE WHEN i %% 3 = 0 THEN i END, '', false, 0.8, 1 + i %% 4, 1.5, 0.9, false
FROM (
    SELECT i, now() - %(hours)s * interval '1 hour' * (1 - i::float / %(rows)s) AS t
    FROM generate_series(1, %(rows)s) AS i
) AS arrivals
"""


def timed(call, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = call()
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=24.0, help="spread the rows over this many past hours")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    from webapp.stack.services import Postgres, Redis, free_port

    run_dir = Path(tempfile.mkdtemp(prefix="t2i-bench-dashboard-"))
    run_dir.chmod(0o755)  # PostgreSQL's service user must reach it when we are root
    pg, redis = Postgres(run_dir / "pg", free_port(), fast_unsafe=True), Redis(run_dir / "redis", free_port())
    pg.start()
    redis.start()
    try:
        os.environ.update(
            DATABASE_URL=pg.url,
            REDIS_URL=redis.url,
            T2I_DATA_DIR=str(run_dir / "data"),
            SECRET_KEY="bench-" + "x" * 60,
            DJANGO_SETTINGS_MODULE="webapp.settings",
        )
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        from webapp.dashboard import metrics_queries as mq

        call_command("migrate", verbosity=0)
        staff = get_user_model().objects.create_superuser("bench", "b@x.invalid", "pw-bench-123")
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(SEED_SQL, {"owner": staff.pk, "rows": args.rows, "hours": args.hours})
            cursor.execute("ANALYZE ledger_generationrequest")
        print(f"seeded {args.rows:,} requests over {args.hours:g} h in {time.perf_counter() - started:.1f} s")

        client = Client()
        client.force_login(staff)
        client.get("/dashboard/")  # warm: templates compiled, connection open
        print(f"{'what':<28}{'median ms':>10}{'worst ms':>10}")
        for window in mq.WINDOWS:
            times = timed(lambda w=window: client.get("/dashboard/", {"window": w}), args.repeat)
            print(f"{'page, window ' + window:<28}{1000 * statistics.median(times):>10.1f}{1000 * max(times):>10.1f}")
        for label, path in (
            ("data.json, 24h", "/dashboard/data.json"),
            ("chart rates.png, 24h", "/dashboard/charts/rates.png"),
        ):
            times = timed(lambda p=path: client.get(p, {"window": "24h"}), args.repeat)
            print(f"{label:<28}{1000 * statistics.median(times):>10.1f}{1000 * max(times):>10.1f}")

        with CaptureQueriesContext(connection) as captured:
            mq.window_summary(mq.resolve_window("24h"))
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + captured.captured_queries[-1]["sql"])
            print("\nplan of the 24 h summary:\n" + "\n".join(row[0] for row in cursor.fetchall()))
    finally:
        redis.stop()
        pg.stop()


if __name__ == "__main__":
    main()
