"""Riding out a database outage inside a GPU task (issue 11, item 2).

PostgreSQL may be restarting while a worker claims a batch or records its results. Rather than ending
the task (its message would be acked and the row would wait for the reconciler), the worker waits with
exponential back-off and tries again, for a bounded time. A claim that still cannot be made is given
up: the row stays queued and the reconciler sends it again once the database is back. A finished
batch's results are retried for longer: the images are done and should not be computed twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connection

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_WAIT_S = 0.25
MAX_WAIT_S = 5.0
CLAIM_PATIENCE_S = 60.0
RESULT_PATIENCE_S = 300.0


def with_database(action: Callable[[], T], patience_s: float, what: str) -> T:
    """`action()`, retried with back-off (0.25 s doubling to 5 s) while the database is unreachable, for
    at most `patience_s`; then the last error is raised."""
    waited, wait = 0.0, FIRST_WAIT_S
    while True:
        try:
            return action()
        except (OperationalError, InterfaceError):
            if waited >= patience_s:
                raise
            log.warning("database unavailable while trying to %s; retrying in %.2f s", what, wait)
            connection.close()  # a broken connection is not reused; the next query opens a new one
            time.sleep(wait)
            waited += wait
            wait = min(MAX_WAIT_S, 2 * wait)
            close_old_connections()
