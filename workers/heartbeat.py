"""A GPU worker says it is alive: a Redis key with a TTL, refreshed by a thread of the process that runs
the batches. A killed worker stops refreshing; so does a frozen one (SIGSTOP stops every thread), so
the key expires one lease after its last sign of life and routing and the reconciler stop counting on
it (webapp/serving/cluster_state.live_workers). The TTL and the period come from the SLO
(scheduler/recovery.py), re-read now and then so an admin change reaches running workers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from django.db import connection

from webapp.ledger.models import ServingConfig
from webapp.ledger.publishing import broker
from webapp.ledger.queues import alive_key
from webapp.serving.live_config import recovery_for

log = logging.getLogger(__name__)
CONFIG_REFRESH_S = 30.0


class Heartbeat:
    def __init__(self, worker: int) -> None:
        self.worker = worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._timings = None
        self._timings_at = float("-inf")

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)  # so that no beat lands after the delete below
        try:
            broker().delete(alive_key(self.worker))  # a clean stop is visible at once
        except Exception:
            log.debug("could not clear the alive key", exc_info=True)

    def _current_timings(self):
        if self._timings is None or time.monotonic() - self._timings_at > CONFIG_REFRESH_S:
            try:
                self._timings = recovery_for(ServingConfig.current())
                self._timings_at = time.monotonic()
            except Exception:  # the database is down: keep the last timings (or wait for the first)
                log.warning("heartbeat: could not read the serving configuration", exc_info=True)
            finally:
                connection.close()  # this thread's own connection; not kept between beats
        return self._timings

    def beat_once(self) -> bool:
        """Refresh the alive key once; False if there are no timings yet or Redis is unreachable."""
        timings = self._current_timings()
        if timings is None:
            return False
        value = json.dumps({"pid": os.getpid(), "at": time.time()})
        try:
            broker().set(alive_key(self.worker), value, px=max(1, int(timings.lease_s * 1000)))
        except Exception:
            log.warning("heartbeat: Redis unreachable", exc_info=True)
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat_once()
            timings = self._timings
            self._stop.wait(timings.heartbeat_s if timings else 1.0)
