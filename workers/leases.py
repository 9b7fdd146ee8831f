"""Keeping the lease of running rows alive while a long batch runs.

A worker that dies stops renewing, its lease expires, and the reconciler takes the rows back.
"""

from __future__ import annotations

import logging
import threading
import uuid

from django.db import connection

from webapp.ledger import transitions

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, request_ids: list[uuid.UUID], lease_seconds: float) -> None:
        self.request_ids = request_ids
        self.lease_seconds = lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.lease_seconds / 3):
                try:
                    transitions.renew_lease(self.request_ids, self.lease_seconds)
                except Exception:
                    log.warning("could not renew lease", exc_info=True)
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
