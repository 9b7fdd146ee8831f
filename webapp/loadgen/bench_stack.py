"""A throw-away stack for `bench_submit`: `python -m webapp.stack.run --engine emulated` from a checkout.

The checkout may be another one than this (a `git worktree` of an older commit), so the same benchmark
measures before and after in one run. Each stack gets a temporary data directory, free ports and throttles
high enough not to count; the serving configuration is set through that checkout's own `manage.py shell`
(the per-user in-flight cap off, the admission mode the benchmark asks for).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from webapp.stack.services import free_port

RECOVERY_OVERRIDES = ("T2I_LEASE_SECONDS", "T2I_RECONCILE_SECONDS", "T2I_REPUBLISH_AFTER_SECONDS")
_CONFIGURE = (
    "from webapp.ledger.models import ServingConfig as S; c = S.current(); c.max_in_flight = 0; "
    "c.admission = {admission!r}; c.save()"
)


class BenchStack:
    """`python -m webapp.stack.run` of the checkout at `root`, in a temporary data directory (or `data_dir`,
    kept after stop()). Also the stack the fault-injection suite breaks (tests/chaos.py)."""

    def __init__(
        self,
        root: Path,
        workers: int,
        time_factor: float,
        admission: str,
        profile: str = "",
        data_dir: Path | None = None,
    ) -> None:
        self.root = root.resolve()
        self.workers, self.time_factor, self.admission, self.profile = workers, time_factor, admission, profile
        self.keep = data_dir is not None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="t2i-bench-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o755)  # the PostgreSQL service user must reach it
        self.web_port = free_port()
        self.env = dict(
            os.environ,
            T2I_DATA_DIR=str(self.data_dir),
            T2I_WEB_PORT=str(self.web_port),
            T2I_FLOWER_PORT=str(free_port()),
            T2I_PG_PORT=str(free_port()),
            T2I_REDIS_PORT=str(free_port()),
            T2I_SUBMIT_RATE="1000000/min",
            T2I_READ_RATE="1000000/min",
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        # The stack's own services and secrets, and the default recovery timings (not a caller's overrides).
        for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE", *RECOVERY_OVERRIDES):
            self.env.pop(name, None)
        self.proc: subprocess.Popen | None = None
        self.token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, timeout_s: float = 300) -> None:
        self.log = open(self.data_dir / "stack.out", "ab")  # noqa: SIM115 - closed in stop()
        argv = [sys.executable, "-m", "webapp.stack.run", "--workers", str(self.workers), "--engine", "emulated"]
        argv += ["--time-factor", str(self.time_factor), "--stop-with-parent"]  # never outlives its caller
        if self.profile:
            argv += ["--profile", self.profile]
        self.proc = subprocess.Popen(argv, cwd=self.root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while "Stack up" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack in {self.root} did not start:\n" + self.output()[-3000:])
            time.sleep(0.5)
        self.token = (self.data_dir / "demo-token.txt").read_text().strip()
        self._configure()
        self.wait_ready(max(1.0, deadline - time.monotonic()))

    def output(self) -> str:
        path = self.data_dir / "stack.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def processes(self) -> dict[str, dict]:
        """The supervisor's status file: each process's state and pid."""
        return json.loads((self.data_dir / "run" / "processes.json").read_text())["processes"]

    def pid(self, name: str) -> int | None:
        processes = self.processes()
        return int(processes[name]["pid"]) if processes.get(name, {}).get("pid") else None

    def web_pid(self) -> int | None:
        """gunicorn's master."""
        return self.pid("web")

    def _configure(self) -> None:
        env = dict(self.env, DJANGO_SETTINGS_MODULE="webapp.settings")

        def secret(name: str) -> str:
            return (self.data_dir / name).read_text().strip()

        env["SECRET_KEY"] = secret("secret-key.txt")
        pg_password = urllib.parse.quote(secret("pg-password.txt"), safe="")
        env["DATABASE_URL"] = f"postgres://postgres:{pg_password}@127.0.0.1:{self.env['T2I_PG_PORT']}/t2i"
        redis_password = urllib.parse.quote(secret("redis-password.txt"), safe="")
        env["REDIS_URL"] = f"redis://:{redis_password}@127.0.0.1:{self.env['T2I_REDIS_PORT']}/0"
        code = _CONFIGURE.format(admission=self.admission)
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code], cwd=self.root, env=env, check=True, capture_output=True
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Until /readyz answers 200 several times in a row (every gunicorn process loads its embedder)."""
        deadline = time.monotonic() + timeout_s
        in_a_row = 0
        while in_a_row < 5:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as answer:
                    in_a_row = in_a_row + 1 if answer.status == 200 else 0
            except (urllib.error.URLError, OSError):
                in_a_row = 0
            if time.monotonic() > deadline:
                raise RuntimeError("the stack never became ready:\n" + self.output()[-2000:])
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)
