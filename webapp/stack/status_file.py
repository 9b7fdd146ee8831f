"""The supervisor's status file: `<T2I_DATA_DIR>/run/processes.json`, rewritten atomically.

    {"supervisor_pid": 123, "updated_at": 1767000000.0,
     "processes": {"web": {"state": "running", "pid": 456, "restarts": 0, "last_exit": null,
                           "since": 1767000000.0}, …}}

state: starting | running | restarting (exited, waiting out its back-off) | failed (crash-looping,
still retried) | stopped (the stack was stopped). last_exit: the last exit code, negative for a
signal (-9: SIGKILL), null if it never exited. since: Unix time of the last state change.
updated_at is refreshed every few seconds while the supervisor lives, so a reader can tell a stale
file. The dashboard reads it with webapp/dashboard/process_status.py (faces do not import each other,
so the reader is its own small module there; tests/test_supervisor.py checks the two agree).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RELATIVE_PATH = Path("run") / "processes.json"


class ProcessState:
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


def status_path(data_dir: Path) -> Path:
    return Path(data_dir) / RELATIVE_PATH


def write_status(path: Path, processes: dict[str, dict]) -> None:
    """Write the whole file at once (temporary file + rename): a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"supervisor_pid": os.getpid(), "updated_at": time.time(), "processes": processes}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    os.replace(tmp, path)
