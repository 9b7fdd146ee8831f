"""`make run`: the whole stack in one terminal, stopped cleanly by Ctrl-C or SIGTERM.

Starts embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL point elsewhere),
migrates, builds the tiny model if no model is there, creates the demo user, then runs the
web server (gunicorn), one Celery worker per GPU slot (queue gpu.<i>), a control worker,
beat and Flower. Every one of them, the two services included, is supervised: restarted with
back-off when it exits, marked failed when it keeps crashing (supervisor.py). Every child gets a
signal from the kernel when this process exits, however it exits; with --stop-with-parent (the
Makefile) this process also stops when make is signalled (parent_watch.py).

Secrets are generated on the first start and kept in the data directory, each in a 0600 file:
`pg-password.txt` and `redis-password.txt` (the embedded services require them), `secret-key.txt`
(Django's SECRET_KEY, unless the environment sets one) and `flower-login.txt`. Children get them
through their environment (DATABASE_URL, REDIS_URL, SECRET_KEY, FLOWER_BASIC_AUTH), never on a
command line, where `ps` would show them to every local user. The ports and URLs it chose go to
`run/connection.json` (no secret; connection_file.py), where `manage.py` run by hand finds them.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from scheduler.profiles import load_profile
from webapp.ledger.queues import CONTROL_QUEUE, gpu_queue, worker_argv

from .connection_file import write_connection
from .parent_watch import ParentWatch
from .services import Postgres, Redis, new_secret, read_or_create_secret, set_parent_death_signal
from .status_file import status_path
from .supervisor import Program, Supervisor

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = ROOT / "workers" / "demo" / "pretrained"  # settings.DEMO_MODEL_PATH: the default model
log = logging.getLogger("t2i.supervisor")


def _die_with_parent() -> None:
    """Child pre-exec: the kernel sends SIGTERM if the supervisor dies, even by SIGKILL."""
    set_parent_death_signal(signal.SIGTERM)


def _log_to_console_and_file(log_dir: Path) -> None:
    """Supervisor events (exits, restarts, failures) on the `make run` console and in supervisor.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(log_dir / "supervisor.log")):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class Stack:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data_dir = Path(os.environ.get("T2I_DATA_DIR", ROOT / ".data")).absolute()
        self.log_dir = self.data_dir / "logs"
        self.supervisor = Supervisor(status_path(self.data_dir))
        self.services: list[Postgres | Redis] = []  # the embedded ones we started (also supervised)
        self.ports: dict[str, int] = {}  # of the embedded services: written to the connection file
        self.env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            T2I_DATA_DIR=str(self.data_dir),
            T2I_WORKERS=str(args.workers),
            T2I_ENGINE=args.engine,
            DJANGO_SETTINGS_MODULE="webapp.settings",
            PYTHONUNBUFFERED="1",
        )
        # DEBUG stays off unless the caller's environment says DEBUG=1 (settings: opt-in), so Django needs
        # a real key: one generated once per data directory.
        if not os.environ.get("SECRET_KEY"):
            self.env["SECRET_KEY"] = self.secret("secret-key.txt", lambda: secrets.token_urlsafe(50))
        if args.profile:
            self.env["T2I_PROFILE"] = args.profile
            if not os.environ.get("T2I_SLO_SECONDS"):
                # The paper's SLO: twice the full-quality batch-1 latency of the profile; applied
                # to the serving configuration at start (T2I_SLO_SECONDS_KEEP=1 keeps the admin's).
                self.env["T2I_SLO_SECONDS"] = f"{2 * load_profile(args.profile).latency(0, 1):.2f}"
        self.env["T2I_TIME_FACTOR"] = str(args.time_factor)

    def secret(self, name: str, make=new_secret) -> str:
        """A secret kept in the data directory (mode 0600), generated the first time."""
        return read_or_create_secret(self.data_dir / name, make)

    # --- services -------------------------------------------------------------------
    def start_services(self) -> None:
        """Start the embedded services, wait until they serve, then hand them to the supervisor."""
        if not os.environ.get("DATABASE_URL"):
            pg = Postgres(
                self.data_dir / "pg",
                int(os.environ.get("T2I_PG_PORT", 54329)),
                password=self.secret("pg-password.txt"),
                die_with_parent=True,
            )
            self.services.append(pg)
            try:
                pg.start()
            finally:  # supervised (hence stopped at the end) even if it started but never became ready
                if pg.proc is not None:
                    self.supervisor.adopt(
                        Program("postgres", pg.launch, signal.SIGINT, stop_last=True, log_path=pg.log_path), pg.proc
                    )
            self.env["DATABASE_URL"] = pg.url
            self.ports["pg_port"] = pg.port
            print(f"PostgreSQL (pgvector) on 127.0.0.1:{pg.port}, data in {pg.data_dir}")
        if not os.environ.get("REDIS_URL"):
            redis = Redis(
                self.data_dir / "redis",
                int(os.environ.get("T2I_REDIS_PORT", 63799)),
                password=self.secret("redis-password.txt"),
                die_with_parent=True,
            )
            self.services.append(redis)
            try:
                redis.start()
            finally:
                if redis.proc is not None:
                    self.supervisor.adopt(
                        Program("redis", redis.launch, stop_last=True, log_path=redis.data_dir / "redis.log"),
                        redis.proc,
                    )
            self.env["REDIS_URL"] = redis.url
            self.ports["redis_port"] = redis.port
            print(f"Redis on 127.0.0.1:{redis.port}, data in {redis.data_dir}")

    def manage(self, *argv: str) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *argv], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        )
        return out.stdout

    def prepare(self) -> str:
        self.manage("migrate", "--noinput")
        self.manage("collectstatic", "--noinput")
        if self.args.profile and not os.environ.get("T2I_SLO_SECONDS_KEEP"):
            self.manage("configure_serving", "--slo", self.env["T2I_SLO_SECONDS"])
        if self.args.engine == "diffusers" and not os.environ.get("T2I_MODEL_PATH"):
            if (DEMO_MODEL / "model_index.json").is_file():
                print(f"Model: the trained demo model in {DEMO_MODEL.relative_to(ROOT)} (docs/demo_model.md).")
            else:  # a clone without the demo weights: the tiny random model, built in a second
                print(self.manage("build_tiny_model").strip())
        return (
            self.manage("ensure_demo_user").strip()
            + "\n  "
            + self.manage("serving_summary").strip().replace("\n", "\n  ")
        )

    # --- processes ------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], **extra_env: str) -> None:
        """Start `argv` under the supervisor, which restarts it the same way when it exits."""
        log_path = self.log_dir / f"{name}.log"

        def launch() -> subprocess.Popen:
            with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
                return subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env={**self.env, **extra_env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: stopping it reaches what it forks
                    preexec_fn=_die_with_parent,
                )

        self.supervisor.start(Program(name, launch, log_path=log_path))

    def flower_auth(self) -> str:
        auth = os.environ.get("FLOWER_BASIC_AUTH")
        if auth:
            return auth
        return self.secret("flower-login.txt", lambda: f"admin:{secrets.token_urlsafe(12)}")

    def start_processes(self) -> str:
        celery = [sys.executable, "-m", "celery", "-A", "webapp"]
        a = self.args
        self.spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "webapp.wsgi",
                "-c",
                "python:webapp.gunicorn_conf",  # JSON for the errors gunicorn answers itself
                "-b",
                f"{a.host}:{a.port}",
                # processes and threads: gunicorn_conf.py sizes them for the machine unless --web-workers is given
                *(["-w", str(a.web_workers)] if a.web_workers else []),
                "--timeout",  # also bounds a worker's start, which loads the embedder before serving (wsgi.py)
                "120",
                "--access-logfile",
                "-",
            ],
        )
        for i in range(a.workers):
            self.spawn(f"worker-{gpu_queue(i)}", worker_argv(gpu_queue(i), f"gpu{i}@%h"), T2I_WORKER_INDEX=str(i))
        self.spawn("worker-control", worker_argv(CONTROL_QUEUE, "control@%h"))
        self.spawn(
            "beat",
            celery + ["beat", "-l", "INFO", "--pidfile=", "-S", "django_celery_beat.schedulers:DatabaseScheduler"],
        )
        auth = self.flower_auth()
        self.spawn(  # the login through the environment (Flower reads FLOWER_*), not the visible argv
            "flower", celery + ["flower", f"--address={a.host}", f"--port={a.flower_port}"], FLOWER_BASIC_AUTH=auth
        )
        return auth

    def write_connection_file(self) -> Path:
        """Ports and URLs this run chose, for commands run by hand next to it (connection_file.py; no secret)."""
        a = self.args
        return write_connection(
            self.data_dir,
            {
                "web_url": f"http://{a.host}:{a.port}",
                "web_port": a.port,
                "flower_url": f"http://{a.host}:{a.flower_port}",
                "flower_port": a.flower_port,
                **self.ports,
            },
        )

    def stop(self) -> None:
        self.supervisor.stop_all()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workers", type=int, default=int(os.environ.get("T2I_WORKERS", 2)))
    p.add_argument("--engine", choices=["diffusers", "emulated"], default=os.environ.get("T2I_ENGINE", "diffusers"))
    p.add_argument(
        "--profile",
        default=os.environ.get("T2I_PROFILE", ""),
        help="latency profile: a preset (sdxl-a100, sd15-a100) or a CSV",
    )
    p.add_argument(
        "--time-factor",
        type=float,
        default=float(os.environ.get("T2I_TIME_FACTOR", 1.0)),
        help="emulated engine: multiply every L(K', b) by this",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("T2I_WEB_PORT", 8000)))
    p.add_argument("--flower-port", type=int, default=int(os.environ.get("T2I_FLOWER_PORT", 5555)))
    p.add_argument("--web-workers", type=int, default=None, help="gunicorn processes (default: one per core, >= 2)")
    p.add_argument(
        "--stop-with-parent",
        action="store_true",
        help="stop the stack when the parent process (make) is signalled or dies",
    )
    return p.parse_args(argv)


def _stop_on(signals: tuple[int, ...]) -> None:
    def on_signal(signum, frame):
        raise KeyboardInterrupt

    # Explicit for SIGINT too: a shell that starts us in the background sets it to "ignore".
    for sig in signals:
        signal.signal(sig, on_signal)


def _ignore(signals: tuple[int, ...]) -> None:
    """While stopping: a second Ctrl-C must not interrupt the stop and leave processes behind."""
    for sig in signals:
        signal.signal(sig, signal.SIG_IGN)


def banner(args: argparse.Namespace, stack: Stack, seconds: float, flower_auth: str, login: str) -> str:
    return (
        f"\nStack up in {seconds:.1f} s "
        f"({args.workers} GPU worker(s), engine={args.engine}).\n"
        f"  Web:     http://{args.host}:{args.port}/  (health: /healthz, /readyz)\n"
        f"  API:     http://{args.host}:{args.port}/api/v1/generations/  "
        f"(docs: /api/docs/)\n"
        f"  Admin:   http://{args.host}:{args.port}/admin/\n"
        f"  Flower:  http://{args.host}:{args.flower_port}/  (basic auth {flower_auth})\n"
        f"  Logs:    {stack.log_dir}\n"
        f"  Status:  {stack.supervisor.status_path}\n"
        f"  {login}\n"
        f"Every process is restarted when it exits; one that keeps crashing is reported FAILED here.\n"
        f"Press Ctrl-C to stop everything."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    _stop_on(stop_signals)
    parent = ParentWatch() if args.stop_with_parent else None
    stack = Stack(args)
    _log_to_console_and_file(stack.log_dir)
    started = time.monotonic()
    try:
        stack.start_services()
        stack.write_connection_file()
        login = stack.prepare()
        flower_auth = stack.start_processes()
        print(banner(args, stack, time.monotonic() - started, flower_auth, login), flush=True)
        stack.supervisor.run(should_stop=parent.parent_is_stopping if parent else lambda: False)
        print("\nmake was signalled; stopping…", flush=True)
        return 0
    except KeyboardInterrupt:
        print("\nStopping…", flush=True)
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"\nError: {exc}\n{detail}", file=sys.stderr, flush=True)
        return 1
    finally:
        _ignore(stop_signals)
        stack.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
