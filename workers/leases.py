"""Keeping the lease of running rows alive while a long batch runs.

A worker that dies stops renewing, its lease expires, and the reconciler takes the rows back. A worker
that was only frozen (SIGSTOP, a long GC pause, a stalled disk) finds out at its next renewal: none of
its rows is still running on it. Then `lost` is set and the batch stops at its next denoising step
(`stop_if_lost`), so the rows are not generated twice: the reconciler has handed them to another worker.
"""

from __future__ import annotations

import logging
import threading
import uuid

from django.db import connection

from webapp.ledger import transitions

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The reconciler gave this batch's rows to another worker while this one was unresponsive."""


class LeaseKeeper:
    def __init__(self, request_ids: list[uuid.UUID], lease_seconds: float, worker: int | None = None) -> None:
        self.request_ids = request_ids
        self.lease_seconds = lease_seconds
        self.worker = worker
        self.lost = threading.Event()
        self.finishing = False  # set once the engine returned: rows leaving `running` are ours ending
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def renew_once(self) -> None:
        try:
            renewed = transitions.renew_lease(self.request_ids, self.lease_seconds, self.worker)
        except Exception:
            log.warning("could not renew lease", exc_info=True)
            return
        # None of the batch is still running here: the reconciler requeued it (all rows share one lease)
        # or every row was cancelled. Some rows ending early (one cancelled) do not stop the others.
        if renewed == 0 and not self.finishing:
            log.warning("none of the %d rows of this batch is still running on this worker", len(self.request_ids))
            self.lost.set()

    def stop_if_lost(self, step: int, steps: int) -> None:
        """The engine's step hook: end the batch once its rows were handed to another worker."""
        if self.lost.is_set():
            raise LeaseLost(f"lease lost before step {step} of {steps}")

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.lease_seconds / 3):
                self.renew_once()
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
