"""/metrics families about the processes: the `make run` supervisor's view of each process (when
its status file exists, process_status.py) and the GPU workers whose heartbeat is fresh."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from webapp.serving.cluster_state import live_workers

from .process_status import read_processes

PREFIX = "t2i"


class ProcessCollector(Collector):
    def describe(self):
        return []  # families depend on whether the status file exists

    def collect(self):
        yield GaugeMetricFamily(
            f"{PREFIX}_live_workers",
            "GPU workers whose heartbeat is fresh (of t2i_workers).",
            value=len(live_workers()),
        )
        processes = read_processes()
        if processes is None:
            return
        up = GaugeMetricFamily(f"{PREFIX}_process_up", "1 if the supervised process is running.", labels=["process"])
        failed = GaugeMetricFamily(
            f"{PREFIX}_process_failed", "1 if the process keeps crashing (still retried).", labels=["process"]
        )
        restarts = CounterMetricFamily(
            f"{PREFIX}_process_restarts", "Restarts by the make run supervisor.", labels=["process"]
        )
        for row in processes:
            up.add_metric([row.name], int(row.up))
            failed.add_metric([row.name], int(row.state == "failed"))
            restarts.add_metric([row.name], row.restarts)
        yield from (up, failed, restarts)
