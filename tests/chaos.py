"""Fault injection against the real embedded stack (issue 11, item 9): `python -m tests.chaos`.

Starts `python -m webapp.stack.run` (the `make run` supervisor: embedded PostgreSQL and Redis, GPU workers
with the emulated engine at time factor 1, beat, the control worker, the web server) in a temporary data
directory with the SDXL profile and its SLO (2 × L(0, 1) = 12.2 s) and the default recovery timings (derived
from that SLO: scheduler/recovery.py). For each scenario it submits requests through the REST API as a
Poisson stream at a fraction of the cluster's capacity, injects the fault, waits until every accepted
request is terminal (or gives up), and prints one row per scenario:

    submitted / accepted / succeeded / failed (reasons) / expired / lost / duplicated / on-time %

* lost: accepted (202) but not terminal when the wait ended, or missing from the ledger;
* duplicated: generations beyond one per succeeded request (sum of batch sizes of the scenario's batch
  records minus its succeeded requests: an image computed twice);
* on-time: succeeded by the deadline, over accepted.

Usage: python -m tests.chaos [--scenarios worker_kill,redis_restart,...] [--workers 4] [--load 0.6]
       [--duration 40] [--keep DIR]. The bounded subset in `make test` is tests/test_chaos.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from scheduler.profiles import load_profile
from webapp.loadgen.bench_stack import BenchStack

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "sdxl-a100"
COLUMNS = (
    "scenario",
    "submitted",
    "accepted",
    "succeeded",
    "failed",
    "expired",
    "lost",
    "duplicated",
    "on-time %",
    "POST p99 s",
)


# --- the stack under test ---------------------------------------------------------------------------------
class ChaosStack(BenchStack):
    """The benchmark's throw-away stack (webapp/loadgen/bench_stack.py) with the SDXL profile at time factor 1,
    kept in `data_dir`, and the means to break its processes."""

    def __init__(self, workers: int, data_dir: Path) -> None:
        super().__init__(ROOT, workers, time_factor=1.0, admission="degrade", profile=PROFILE, data_dir=data_dir)
        self.hits: list[Hit] = []  # the faults that struck GPU workers in the current scenario

    def signal_group(self, name: str, sig: int) -> None:
        """Signal a supervised process with everything it forked (a Celery worker's pool child too)."""
        pid = self.pid(name)
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# --- load ---------------------------------------------------------------------------------------------
def capacity_rps(workers: int) -> float:
    """Requests/s the cluster serves at K′ = 0 in the largest batches the SLO allows: the load's yardstick
    (a fresh stack's cache is nearly empty, so most requests run at K′ = 0)."""
    profile = load_profile(PROFILE)
    slo = 2 * profile.latency(0, 1)
    cap = profile.batch_caps(slo)[0]
    return workers * cap / profile.latency(0, cap)


@dataclass
class Submitted:
    accepted: list[str] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)
    submitted: int = 0
    post_seconds: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


SUBJECTS = ("a lighthouse", "a red fox", "a teapot", "a mountain lake", "an old tram", "a paper crane")
STYLES = ("at dawn", "in the rain", "as an oil painting", "in watercolour", "at night", "in snow", "from above")


def _prompt(rng: random.Random, i: int) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(STYLES)}, study {i}"


def submit_stream(stack: ChaosStack, rate: float, duration_s: float, seed: int, out: Submitted) -> None:
    """Poisson arrivals at `rate` for `duration_s`, each POST in its own thread so a slow answer does not
    delay the next arrival."""
    rng = random.Random(seed)
    url = f"{stack.url}/api/v1/generations/"
    threads = []

    def post(i: int) -> None:
        body = json.dumps({"prompt": _prompt(rng, i)}).encode()
        request = urllib.request.Request(
            url, body, {"Content-Type": "application/json", "Authorization": f"Token {stack.token}"}
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                request_id = json.loads(r.read())["id"]
            with out.lock:
                out.accepted.append(request_id)
                out.post_seconds.append(time.monotonic() - started)
        except urllib.error.HTTPError as exc:
            with out.lock:
                out.refused[str(exc.code)] += 1
                out.post_seconds.append(time.monotonic() - started)
        except (urllib.error.URLError, OSError):
            with out.lock:
                out.refused["no answer"] += 1

    started = time.monotonic()
    i = 0
    while time.monotonic() - started < duration_s:
        with out.lock:
            out.submitted += 1
        thread = threading.Thread(target=post, args=(i,), daemon=True)
        thread.start()
        threads.append(thread)
        i += 1
        # The next arrival, but not past the end of the window (at a low rate one gap can be minutes).
        time.sleep(min(rng.expovariate(rate), max(0.0, duration_s - (time.monotonic() - started))))
    for thread in threads:
        thread.join(60)


# --- faults -------------------------------------------------------------------------------------------
def _later(delay_s: float, action: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        time.sleep(delay_s)
        action()

    return run


@dataclass(frozen=True)
class Hit:
    """A fault that struck a GPU worker as it began requests."""

    at_s: float  # seconds into the scenario
    process: str
    running: tuple[str, ...]  # the requests it had just begun: the work recovery has to save


KILLS = 2  # worker_kill strikes twice: a request may be killed on its re-run too
FREEZES = 1  # worker_freeze strikes once
FAULT_AFTER_S = 3.0  # no fault strikes a worker before this, into the scenario
FAULT_WAIT_S = 60.0  # give up waiting for a request to begin after this long
POLL_S = 0.2


class _Starts:
    """Runs that begin, seen in the ledger: a (row, attempt) running now that was not running at the previous
    look. Caught within a poll of their start, so far from their end (the shortest SDXL batch takes ~3 s):
    a kill then interrupts work, it cannot land just after the batch finished."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()
        self.looked = False

    def new(self) -> list[tuple[int, str]]:
        """(worker, id) of the runs that began since the last call; none on the first call."""
        from django.db import OperationalError, close_old_connections

        from webapp.ledger.models import GenerationRequest, Status

        try:
            close_old_connections()
            running = GenerationRequest.objects.filter(status=Status.RUNNING)
            rows = [(w, str(i), n) for w, i, n in running.values_list("worker", "id", "attempts")]
        except OperationalError:
            return []
        began = [(w, i) for w, i, n in rows if (i, n) not in self.seen] if self.looked else []
        self.seen.update((i, n) for _, i, n in rows)
        self.looked = True
        return began


def _as_runs_begin(stack: ChaosStack, times: int, strike: Callable[[str], None]) -> Callable[[], None]:
    """A fault that strikes (`strike(process)`) a GPU worker just as it begins running a request, `times`
    times: striking an idle worker would test only the supervisor, not the recovery of accepted work."""

    def run() -> None:
        from django.db import connection

        started = time.monotonic()
        time.sleep(FAULT_AFTER_S)
        starts = _Starts()
        try:
            while len(stack.hits) < times and time.monotonic() - started < FAULT_WAIT_S:
                began = starts.new()
                if not began:
                    time.sleep(POLL_S)
                    continue
                worker = began[0][0]
                process = f"worker-gpu.{worker}"
                ids = tuple(i for w, i in began if w == worker)
                stack.hits.append(Hit(round(time.monotonic() - started, 1), process, ids))
                strike(process)
        finally:
            connection.close()  # this thread's own connection

    return run


def worker_kill(stack: ChaosStack) -> list[Callable[[], None]]:
    """SIGKILL a GPU worker (main process and pool child) as it begins a request, twice."""
    return [_as_runs_begin(stack, KILLS, lambda process: stack.signal_group(process, signal.SIGKILL))]


def worker_freeze(stack: ChaosStack) -> list[Callable[[], None]]:
    """SIGSTOP a GPU worker as it begins a request, for 15 s (several leases), then SIGCONT."""

    def freeze(process: str) -> None:
        stack.signal_group(process, signal.SIGSTOP)
        time.sleep(15)
        stack.signal_group(process, signal.SIGCONT)

    return [_as_runs_begin(stack, FREEZES, freeze)]


def redis_restart(stack: ChaosStack) -> list[Callable[[], None]]:
    """SIGKILL Redis (its queued messages are lost); the supervisor restarts it."""
    return [_later(10, lambda: os.kill(stack.pid("redis"), signal.SIGKILL))]


def postgres_restart(stack: ChaosStack) -> list[Callable[[], None]]:
    """SIGKILL PostgreSQL's postmaster; the supervisor restarts it (crash recovery of the WAL)."""
    return [_later(10, lambda: os.kill(stack.pid("postgres"), signal.SIGKILL))]


def beat_kill(stack: ChaosStack) -> list[Callable[[], None]]:
    return [_later(5, lambda: stack.signal_group("beat", signal.SIGKILL))]


def web_kill(stack: ChaosStack) -> list[Callable[[], None]]:
    """SIGKILL the web server (gunicorn and its workers) mid-burst."""
    return [_later(10, lambda: stack.signal_group("web", signal.SIGKILL))]


def no_fault(stack: ChaosStack) -> list[Callable[[], None]]:
    return []


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: Callable[[ChaosStack], list[Callable[[], None]]]
    load: float | None = None  # × capacity; None: the command's --load
    admission: str | None = None  # ServingConfig.admission for this scenario
    strikes: int = 0  # how many times its fault strikes a worker as it begins a request (_as_runs_begin)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("baseline", no_fault),
        Scenario("worker_kill", worker_kill, strikes=KILLS),
        Scenario("worker_freeze", worker_freeze, strikes=FREEZES),
        Scenario("redis_restart", redis_restart),
        Scenario("postgres_restart", postgres_restart),
        Scenario("beat_kill", beat_kill),
        Scenario("web_kill", web_kill),
        Scenario("overload_queue", no_fault, load=5.0, admission="queue"),
        Scenario("overload_degrade", no_fault, load=5.0, admission="degrade"),
        Scenario("overload_shed", no_fault, load=5.0, admission="shed"),
    )
}


# --- outcomes -----------------------------------------------------------------------------------------
def _django(stack: ChaosStack) -> None:
    """This process reads the stack's ledger directly (settings find its database from the data dir)."""
    os.environ.update(
        T2I_DATA_DIR=stack.env["T2I_DATA_DIR"],
        DJANGO_SETTINGS_MODULE="webapp.settings",
        SECRET_KEY=os.environ.get("SECRET_KEY") or (stack.data_dir / "secret-key.txt").read_text().strip(),
    )
    pg = stack.env["T2I_PG_PORT"]
    password = (stack.data_dir / "pg-password.txt").read_text().strip()
    os.environ["DATABASE_URL"] = f"postgres://postgres:{urllib.parse.quote(password, safe='')}@127.0.0.1:{pg}/t2i"
    redis_password = (stack.data_dir / "redis-password.txt").read_text().strip()
    os.environ["REDIS_URL"] = (
        f"redis://:{urllib.parse.quote(redis_password, safe='')}@127.0.0.1:{stack.env['T2I_REDIS_PORT']}/0"
    )
    import django

    django.setup()


def _configure(admission: str) -> None:
    from django.db import close_old_connections

    from webapp.ledger.models import ServingConfig

    close_old_connections()
    config = ServingConfig.current()
    config.max_in_flight = 0  # one client sends all the load
    config.admission = admission
    config.save()


def _wait_terminal(ids: list[str], timeout_s: float) -> None:
    from django.db import OperationalError, close_old_connections

    from webapp.ledger.models import ACTIVE_STATES, GenerationRequest

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            close_old_connections()
            if not GenerationRequest.objects.filter(pk__in=ids, status__in=ACTIVE_STATES).exists():
                return
        except OperationalError:
            pass
        time.sleep(1)


def outcome_row(name: str, sub: Submitted, window_start: float) -> dict:
    from datetime import datetime

    from django.db.models import Sum

    from webapp.ledger.models import BatchRecord, GenerationRequest, Status

    rows = list(GenerationRequest.objects.filter(pk__in=sub.accepted))
    by_status = Counter(r.status for r in rows)
    reasons = Counter(_reason(r.error) for r in rows if r.status == Status.FAILED)
    succeeded = by_status[Status.SUCCEEDED]
    generated = (
        BatchRecord.objects.filter(finished_at__gte=datetime.fromtimestamp(window_start, tz=UTC)).aggregate(
            n=Sum("batch_size")
        )["n"]
        or 0
    )
    on_time = sum(1 for r in rows if r.status == Status.SUCCEEDED and r.finished_at <= r.deadline)
    accepted = len(sub.accepted)
    return {
        "scenario": name,
        "submitted": sub.submitted,
        "accepted": accepted,
        "refused": dict(sub.refused),
        "succeeded": succeeded,
        "failed": by_status[Status.FAILED],
        "failed_reasons": dict(reasons),
        "expired": by_status[Status.EXPIRED],
        "lost": accepted
        - sum(by_status[s] for s in (Status.SUCCEEDED, Status.FAILED, Status.EXPIRED))
        - by_status[Status.CANCELLED],
        "duplicated": max(0, generated - succeeded),
        "on_time_pct": 100.0 * on_time / accepted if accepted else 100.0,
        "post_p99_s": _quantile(sub.post_seconds, 0.99),
    }


def hit_rows(hits: list[Hit]) -> list[dict]:
    """Each fault that struck a worker, with how the requests it interrupted ended: {id: [status, attempts]}."""
    from webapp.ledger.models import GenerationRequest

    rows = []
    for hit in hits:
        ended = GenerationRequest.objects.filter(pk__in=hit.running).values_list("id", "status", "attempts")
        rows.append({**dataclasses.asdict(hit), "ended": {str(i): [status, n] for i, status, n in ended}})
    return rows


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _reason(error: str) -> str:
    return re.split(r"[:;(]", error, maxsplit=1)[0].strip()[:40] or "unknown"


def run_scenario(stack: ChaosStack, scenario: Scenario, load: float, duration_s: float, seed: int) -> dict:
    from scheduler.recovery import EXPIRY_SLO_MULTIPLE

    _configure(scenario.admission or "degrade")
    stack.hits.clear()
    window_start = time.time()
    sub = Submitted()
    rate = (scenario.load or load) * capacity_rps(stack.workers)
    faults = [threading.Thread(target=f, daemon=True) for f in scenario.faults(stack)]
    for fault in faults:
        fault.start()
    submit_stream(stack, rate, duration_s, seed, sub)
    for fault in faults:
        fault.join(120)
    slo = 2 * load_profile(PROFILE).latency(0, 1)
    _wait_terminal(sub.accepted, timeout_s=EXPIRY_SLO_MULTIPLE * slo + 60)
    stack.wait_ready(120)  # the next scenario starts from a healthy stack
    return {
        **outcome_row(scenario.name, sub, window_start),
        "hits": hit_rows(stack.hits),
        "fault_missed": max(0, scenario.strikes - len(stack.hits)),
    }


def format_row(row: dict) -> str:
    failed = str(row["failed"])
    if row["failed_reasons"]:
        failed += " (" + ", ".join(f"{k}: {v}" for k, v in row["failed_reasons"].items()) + ")"
    cells = [
        row["scenario"],
        row["submitted"],
        row["accepted"],
        row["succeeded"],
        failed,
        row["expired"],
        row["lost"],
        row["duplicated"],
        f"{row['on_time_pct']:.1f}",
        f"{row['post_p99_s']:.2f}",
    ]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--load", type=float, default=0.6, help="arrival rate as a fraction of capacity at K′ = 0")
    p.add_argument("--duration", type=float, default=40.0, help="seconds of arrivals per scenario")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, help="data directory to use and keep (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    signal.signal(signal.SIGTERM, _exit_on_signal)  # so `finally` stops the stack
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="t2i-chaos-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = ChaosStack(args.workers, data_dir)
    print(f"Starting the stack ({args.workers} emulated workers, profile {PROFILE}) in {data_dir} …", flush=True)
    stack.start()
    _django(stack)
    rows = []
    try:
        print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
        for i, name in enumerate(names):
            row = run_scenario(stack, SCENARIOS[name], args.load, args.duration, args.seed + i)
            rows.append(row)
            print(format_row(row), flush=True)
    finally:
        stack.stop()
    for row in rows:
        for hit in row["hits"]:
            began = len(hit["running"])
            print(f"{row['scenario']}: struck {hit['process']} {hit['at_s']} s in, as it began {began} request(s)")
        if row["fault_missed"]:
            print(
                f"{row['scenario']}: FAULT MISSED {row['fault_missed']} time(s): no request began within "
                f"{FAULT_WAIT_S:.0f} s, so this row did not test what it names"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["lost"] == 0 and not r["fault_missed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
