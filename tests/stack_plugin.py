"""Pytest plugin (loaded with -p from pytest.ini): point the test run at its own services.

Its module body runs when pytest imports `-p` plugins, before pytest-django reads the
settings (a `pytest_load_initial_conftests` hook would be too late). It only chooses things and
writes them to the environment: free ports, a fresh data directory, short leases, and this run's own
secrets (the services' passwords, SECRET_KEY), made up per run. The services themselves are
started lazily by the `embedded_services` fixture in conftest.py, so pure-Python test runs
never pay for them. A run never shares ports, Redis database or data with `make run`.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from urllib.parse import quote

from webapp.stack.services import free_port, new_secret

ROOT = Path(__file__).resolve().parents[1]


def _configure_environment() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="t2i-test-"))
    run_dir.chmod(0o755)  # our own folder: the PostgreSQL service user must reach it
    pg_port, redis_port = free_port(), free_port()
    pg_password, redis_password = new_secret(), new_secret()
    os.environ.update(
        {
            "T2I_TEST_RUN_DIR": str(run_dir),
            "T2I_TEST_PG_PORT": str(pg_port),
            "T2I_TEST_REDIS_PORT": str(redis_port),
            "T2I_TEST_PG_PASSWORD": pg_password,
            "T2I_TEST_REDIS_PASSWORD": redis_password,
            "DATABASE_URL": f"postgres://postgres:{quote(pg_password, safe='')}@127.0.0.1:{pg_port}/t2i",
            "REDIS_URL": f"redis://:{quote(redis_password, safe='')}@127.0.0.1:{redis_port}/0",
            # DEBUG stays off, as in production (pytest-django turns it off in this process anyway; worker
            # processes and servers started by tests inherit this environment).
            "SECRET_KEY": secrets.token_urlsafe(50),
            "T2I_DATA_DIR": str(run_dir / "data"),
            "MEDIA_ROOT": str(run_dir / "media"),
            # Built once and reused by later runs (it is deterministic).
            "T2I_MODEL_PATH": str(ROOT / ".data" / "test-cache" / "tiny-sd"),
            "T2I_WORKERS": "2",
            "T2I_LEASE_SECONDS": "3",
            "T2I_REPUBLISH_AFTER_SECONDS": "2",
            "T2I_SUBMIT_RATE": "100000/min",
            "T2I_READ_RATE": "100000/min",
            "HF_HUB_OFFLINE": "1",
            # The suite's routing expectations are for the bare profile (the default); what a loaded machine adds
            # per batch would move them. The tests of the measured overhead turn it on.
            "T2I_MEASURED_OVERHEAD": "0",
            "T2I_FAST_PASSWORD_HASHER": "1",  # webapp/settings.py: MD5 hashing, test users in ms not 0.3 s
        }
    )


_configure_environment()
