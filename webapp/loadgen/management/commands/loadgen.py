"""`manage.py loadgen`: replay a trace against the REST API at the trace's times and report like the simulator.

    python manage.py loadgen --trace ../shared/data/traces/proteus_twitter/zipf_exponential_300/*.txt \\
        --prompts ../shared/data/prompts/diffusiondb_2m_first_4k.txt --warm 1000 \\
        --peak-load 1.0 --time-scale 6.5 --max-seconds 300 --out results/live

Prints the simulator's table (one row, the live policy) and writes OUT/results.json (the simulator's
layout), series.json, requests.csv (one line per arrival), timeseries.png and kmix.png. See docs/loadgen.md.
"""

from __future__ import annotations

import os
import sys

from django.core.management.base import BaseCommand

from webapp.loadgen import collect
from webapp.loadgen.cli import add_live_arguments, header_line, run_live
from webapp.loadgen.workload import write_segment


class Command(BaseCommand):
    help = (
        "Replay a trace against the REST API at the trace's times (simulator's trace formats and "
        "scaling), wait for every request to end, print the simulator's metrics table and write "
        "results.json and plots."
    )

    def add_arguments(self, parser):
        add_live_arguments(parser, out_default="results/loadgen")

    def handle(self, *args, **opts):
        err = self.stderr._out if hasattr(self.stderr, "_out") else sys.stderr
        run = run_live(opts, stream=err)
        cfg = run.setup.config
        results = {run.label: run.metrics}
        title = (
            f"live: {cfg.n_workers} workers, {cfg.profile.name}, SLO {cfg.slo_s:.1f}s, peak load "
            f"{opts['peak_load']}, time ×{opts['time_scale']}, factor {run.setup.time_factor:g}, "
            f"{run.workload.n} requests"
        )
        written = collect.write_outputs(
            opts["out"], run.config, results, {run.label: run.series}, title, plots=not opts["no_plots"]
        )
        collect.write_requests_csv(os.path.join(opts["out"], "requests.csv"), run.result, run.arrays)
        write_segment(os.path.join(opts["out"], "trace_segment.txt"), run.workload.arrivals)
        if run.plans:
            collect.write_json(
                os.path.join(opts["out"], "plans.json"),
                {"levels": cfg.levels, "times": "profile seconds from the first arrival", "plans": run.plans},
            )
        m = run.metrics
        self.stdout.write(header_line(cfg, run.setup))
        self.stdout.write(collect.format_table(results))
        self.stdout.write(
            f"accepted {m['accepted']}/{m['requests']} · HTTP errors {m['http_errors']} "
            f"{m['http_error_codes'] or ''}· unfinished {m['unfinished']} · statuses "
            f"{m['status_counts']} · submit lag p99 {_f(m['submit_lag_p99_s'])} s wall · "
            f"wall {m['live_wall_s']:.0f} s"
        )
        self.stdout.write(f"wrote {written[0]}")


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"
