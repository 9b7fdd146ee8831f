"""Names on the wire: Celery task names, queue names and the worker command line.

The one place they are spelled. The web side publishes by task *name* (it never imports the
GPU package), the workers register their tasks under these names, the `make run` supervisor
and the tests start workers with `worker_argv`, and docker-compose.yml repeats them in its
comments. Django-free, so the supervisor can import it before Django is set up.

Task names are stored in beat's tables (django-celery-beat) of existing databases: renaming
one would orphan those rows, so they keep the names they were first given.
"""

from __future__ import annotations

import sys

GENERATE_TASK = "workers.generate"  # run one batch of ApproxC on a GPU worker
SWEEP_CACHE_TASK = "workers.sweep_cache_files"  # remove latent files no cache row names
RECONCILE_TASK = "ledger.reconcile"  # repair the ledger: leases, lost messages, overdue rows
CONTROL_TASK = "ledger.control"  # the Resource Controller: refresh the plan

CONTROL_QUEUE = "control"  # beat's tasks: one worker, never a GPU
GPU_QUEUE_PREFIX = "gpu."
ALIVE_KEY_PREFIX = "t2i:alive:"  # Redis key a GPU worker refreshes while it lives (workers/heartbeat.py)


def gpu_queue(worker: int) -> str:
    """The queue GPU worker `worker` consumes: gpu.<index>."""
    return f"{GPU_QUEUE_PREFIX}{worker}"


def alive_key(worker: int) -> str:
    """The Redis key GPU worker `worker` keeps alive (with a TTL) while it can take work."""
    return f"{ALIVE_KEY_PREFIX}{gpu_queue(worker)}"


def worker_argv(queue: str, node_name: str, *, events: bool = True, log_level: str = "INFO") -> list[str]:
    """The Celery worker command line for one queue: one process, one message at a time (a GPU
    runs one batch at a time; prefetching more would hide queued work from dispatch)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "webapp",
        "worker",
        "-Q",
        queue,
        "-c",
        "1",
        "--prefetch-multiplier",
        "1",
        "-n",
        node_name,
        "--without-gossip",
        "--without-mingle",
        "-l",
        log_level,
    ]
    if events:
        argv.append("-E")  # task events for Flower
    else:
        argv.append("--without-heartbeat")
    return argv
