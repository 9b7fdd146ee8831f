"""Where the running stack is: `<T2I_DATA_DIR>/run/connection.json`, written by `make run`, read by settings.

    {"web_url": "http://127.0.0.1:8001", "web_port": 8001, "flower_url": "http://127.0.0.1:5556",
     "flower_port": 5556, "pg_port": 54330, "redis_port": 63800, "written_at": 1767000000.0}

`manage.py` and every command started next to a `make run` on other ports (createsuperuser,
create_api_token, loadgen…) find the services through it when the environment does not name them
(webapp/settings.py). No secret is in it: the passwords and SECRET_KEY stay in their own 0600 files in the
data directory. `pg_port` / `redis_port` are absent when `make run` used DATABASE_URL / REDIS_URL from the
environment (the caller then sets the same variables for its commands). Imports nothing of the project,
so settings can read it before Django is set up.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RELATIVE_PATH = Path("run") / "connection.json"


def connection_path(data_dir: Path) -> Path:
    return Path(data_dir) / RELATIVE_PATH


def write_connection(data_dir: Path, settings: dict) -> Path:
    """Write the file at once (temporary file + rename), world-readable: it holds no secret."""
    path = connection_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({**settings, "written_at": time.time()}, indent=2, sort_keys=True) + "\n")
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def read_connection(data_dir: Path) -> dict:
    """What the last `make run` on this data directory chose; {} if it never ran or the file is unreadable."""
    try:
        found = json.loads(connection_path(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
