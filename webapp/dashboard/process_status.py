"""The `make run` supervisor's status file, read for the dashboard's process tile and /metrics.

Written by webapp/stack/status_file.py (format there) at `<DATA_DIR>/run/processes.json`. Faces do
not import each other, so this reader only shares the file's path and fields with the writer
(tests/test_supervisor.py checks they agree). No file (compose, `manage.py runserver`) or a stale
one (its supervisor stopped refreshing it) reads as None: there is nothing to report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

RELATIVE_PATH = Path("run") / "processes.json"
STALE_AFTER_S = 60.0  # the supervisor refreshes the file every 5 s while it lives


@dataclass(frozen=True)
class ProcessRow:
    name: str
    state: str  # starting | running | restarting | failed | stopped
    pid: int | None
    restarts: int
    last_exit: int | None
    since: datetime | None

    @property
    def up(self) -> bool:
        return self.state == "running"


def status_file() -> Path:
    return Path(settings.DATA_DIR) / RELATIVE_PATH


def read_processes(path: Path | None = None, now: float | None = None) -> list[ProcessRow] | None:
    """The supervised processes, by name; None without a fresh status file."""
    try:
        body = json.loads((path or status_file()).read_text())
        updated_at = float(body["updated_at"])
        processes = body["processes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (time.time() if now is None else now) - updated_at > STALE_AFTER_S:
        return None
    return [_row(name, fields) for name, fields in sorted(processes.items())]


def _row(name: str, fields: dict) -> ProcessRow:
    since = fields.get("since")
    return ProcessRow(
        name=name,
        state=str(fields.get("state", "unknown")),
        pid=fields.get("pid"),
        restarts=int(fields.get("restarts") or 0),
        last_exit=fields.get("last_exit"),
        since=datetime.fromtimestamp(since, UTC) if isinstance(since, (int, float)) else None,
    )
