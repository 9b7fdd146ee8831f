"""`manage.py bench_submit`: the submit-path benchmark (webapp/loadgen/submit_bench.py, docs/submit_path.md).

    # a stack of its own per checkout, one after the other, with ratios (before/after in one run):
    python manage.py bench_submit --stack /tmp/before --stack . --clients 32 --duration 60
    # or a running stack:
    python manage.py bench_submit --url http://127.0.0.1:8000 --token $TOKEN

Prints one column per stack: POST → worker start on an idle stack, accepted/s and POST latency under
load, the web processes' CPU per accepted request and per GET, how busy the machine was and how much of it
this client took, status GETs per second.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from webapp.loadgen.bench_stack import BenchStack
from webapp.loadgen.submit_bench import Results, gunicorn_master, idle_phase, load_phase, read_phase


class Command(BaseCommand):
    help = "Benchmark the submit path: accepted/s, POST latency, CPU per request, POST → worker start, GET/s."

    def add_arguments(self, parser):
        target = parser.add_argument_group("target: a running stack, or stacks started here")
        target.add_argument("--url", help="a running stack, e.g. http://127.0.0.1:8000")
        target.add_argument("--token", help="an API token of that stack (make run prints one)")
        target.add_argument("--web-pid", type=int, help="its gunicorn master (default: found by the port)")
        target.add_argument(
            "--stack",
            action="append",
            type=Path,
            default=[],
            help="a checkout to start `webapp.stack.run --engine emulated` from (repeat to compare; the first "
            "is the baseline of the ratios)",
        )
        target.add_argument("--workers", type=int, default=4, help="emulated GPU workers of a started stack")
        target.add_argument("--time-factor", type=float, default=0.02, help="emulated latency multiplier")
        target.add_argument("--admission", default="queue", help="admission mode set on a started stack")
        parser.add_argument("--clients", type=int, default=32, help="concurrent clients under load")
        parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
        parser.add_argument("--idle-requests", type=int, default=100, help="sequential requests on the idle stack")
        parser.add_argument("--read-duration", type=float, default=15.0, help="seconds of status GETs")

    def handle(self, *args, **opts):
        if not opts["stack"] and not (opts["url"] and opts["token"]):
            raise CommandError("Give --url and --token of a running stack, or one or more --stack checkouts.")
        columns: dict[str, Results] = {}
        if opts["url"]:
            port = urlsplit(opts["url"]).port or 80
            columns[opts["url"]] = self._measure(
                opts["url"], opts["token"], opts["web_pid"] or gunicorn_master(port), opts
            )
        for root in opts["stack"]:
            stack = BenchStack(root, opts["workers"], opts["time_factor"], opts["admission"])
            self.stderr.write(f"starting a stack from {stack.root} …")
            try:
                stack.start()
                columns[str(root)] = self._measure(stack.url, stack.token, stack.web_pid(), opts)
            finally:
                stack.stop()
        self.stdout.write(format_table(columns, opts))

    def _measure(self, url: str, token: str, web_pid: int | None, opts) -> Results:
        results = Results()
        salt = random.randrange(1_000_000)  # prompts never seen by this stack's cache before
        self.stderr.write(f"  idle: {opts['idle_requests']} sequential requests")
        idle_phase(url, token, opts["idle_requests"], results, salt)
        self.stderr.write(f"  load: {opts['clients']} clients for {opts['duration']:g} s")
        load_phase(url, token, opts["clients"], opts["duration"], web_pid, results, salt)
        self.stderr.write(f"  reads: {opts['clients']} clients for {opts['read_duration']:g} s")
        read_phase(url, token, opts["clients"], opts["read_duration"], results, web_pid)
        return results


def format_table(columns: dict[str, Results], opts) -> str:
    summaries = {name: results.summary() for name, results in columns.items()}
    names = list(summaries)
    metrics = list(next(iter(summaries.values())))
    width = max(12, *(len(n) for n in names))
    head = f"{'metric':<28}" + "".join(f"{n:>{width + 2}}" for n in names)
    if len(names) > 1:
        head += f"{'ratio last/first':>18}"
    lines = [
        f"bench_submit: {opts['clients']} clients × {opts['duration']:g} s, {opts['idle_requests']} idle requests, "
        f"{opts['read_duration']:g} s of reads",
        head,
    ]
    for metric in metrics:
        values = [summaries[n][metric] for n in names]
        row = f"{metric:<28}" + "".join(f"{_fmt(v):>{width + 2}}" for v in values)
        if len(names) > 1:
            first, last = values[0], values[-1]
            ratio = last / first if first and not math.isnan(first) and not math.isnan(last) else float("nan")
            row += f"{_fmt(ratio, ratio=True):>18}"
        lines.append(row)
    for name in names:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(columns[name].load_codes.items(), key=str))
        lines.append(f"answers under load ({name}): {codes}")
    return "\n".join(lines)


def _fmt(value: float, ratio: bool = False) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if ratio:
        return f"×{value:.2f}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
