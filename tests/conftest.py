"""Shared fixtures: real PostgreSQL/pgvector, real Redis and real Celery worker processes.

Nothing of our own infrastructure is mocked. Services start once per test run, on ports
chosen by tests/stack_plugin.py, and stop at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from webapp.ledger.queues import gpu_queue, worker_argv

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items) -> None:
    """Files holding a test marked `slow` are collected first, each file's tests in their own order. pytest-xdist
    (`--dist loadfile --no-loadscope-reorder`, the Makefile's) hands files out in this order, so the longest
    files start first and the run does not end on one of them running alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within each group stays


def pytest_unconfigure(config) -> None:
    run_dir = os.environ.get("T2I_TEST_RUN_DIR")
    if run_dir and not os.environ.get("T2I_KEEP_TEST_DATA"):
        shutil.rmtree(run_dir, ignore_errors=True)


def subprocess_database_url() -> str:
    """DATABASE_URL of the *test* database pytest-django created, password included, for subprocesses."""
    from urllib.parse import quote

    from django.conf import settings

    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{quote(db['PASSWORD'], safe='')}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture(scope="session")
def embedded_services():
    from webapp.stack.services import Postgres, Redis

    run_dir = Path(os.environ["T2I_TEST_RUN_DIR"])
    pg = Postgres(
        run_dir / "pg",
        int(os.environ["T2I_TEST_PG_PORT"]),
        fast_unsafe=True,
        shared_buffers="128MB",
        password=os.environ["T2I_TEST_PG_PASSWORD"],
    )
    redis = Redis(
        run_dir / "redis",
        int(os.environ["T2I_TEST_REDIS_PORT"]),
        persist=False,
        password=os.environ["T2I_TEST_REDIS_PASSWORD"],
    )
    pg.start()
    redis.start()
    yield {"postgres": pg, "redis": redis}
    redis.stop()
    pg.stop()


@pytest.fixture(scope="session")
def loopback_s3():
    """An S3-compatible server (moto's standalone one) on a free loopback port for the whole run."""
    from webapp.cache.loopback_s3 import LoopbackS3

    server = LoopbackS3("t2i-test", log_path=Path(os.environ["T2I_TEST_RUN_DIR"]) / "moto-s3.log").start()
    yield server
    server.stop()


@pytest.fixture
def s3_storage(loopback_s3, settings, monkeypatch):
    """This process keeps images and latents in the loopback bucket, under a prefix of this test's own."""
    import uuid

    from webapp.settings import s3_storages

    env = loopback_s3.storage_env(prefix=f"t-{uuid.uuid4().hex[:12]}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, env[name])
    settings.T2I_STORAGE = "s3"
    settings.STORAGES = s3_storages(
        env["T2I_S3_BUCKET"], env["T2I_S3_PREFIX"], env["T2I_S3_ENDPOINT_URL"], env["T2I_S3_REGION"]
    )
    return env


@pytest.fixture(scope="session")
def django_db_modify_db_settings(embedded_services):
    """pytest-django creates the test database after this: the server must be up by then."""
    return None


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: the tiny model's ops are too small to gain from more, and on a loaded
    2-core machine OpenMP threads waiting on each other made runs up to 20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    from django.conf import settings

    from workers.tiny_model import build_tiny_pipeline

    path = Path(settings.T2I_MODEL_PATH)
    if not (path / "model_index.json").exists():
        tmp = path.with_name(path.name + f".building-{os.getpid()}")
        build_tiny_pipeline(tmp)
        if not (path / "model_index.json").exists():  # a broken leftover goes; a parallel test process's build stays
            shutil.rmtree(path, ignore_errors=True)
        try:
            tmp.rename(path)
        except OSError:  # the other test process (pytest-xdist) renamed its identical build there first
            shutil.rmtree(tmp)
    return path


class WorkerProcess:
    """One real `celery worker` process consuming one queue, against the test database."""

    def __init__(self, queue: str, index: int | None, env: dict[str, str], log_path: Path) -> None:
        self.queue, self.index, self.env, self.log_path = queue, index, env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        name = f"{self.queue.replace('.', '')}-{time.monotonic_ns()}@test"
        env = dict(self.env)
        if self.index is not None:
            env["T2I_WORKER_INDEX"] = str(self.index)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop(), after the process
        self.proc = subprocess.Popen(
            worker_argv(self.queue, name, events=False),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log_path.read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(
            f"worker for {self.queue} did not start:\n" + self.log_path.read_text(errors="replace")[-3000:]
        )

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def worker_env(embedded_services, django_db_setup, tiny_model_path) -> dict[str, str]:
    """Environment of worker processes: the *test* database that pytest-django created."""
    return dict(os.environ, DATABASE_URL=subprocess_database_url(), PYTHONUNBUFFERED="1")


@pytest.fixture(scope="session")
def start_worker(worker_env):
    """Factory: start a worker process for queue gpu.<index> (stopped at session end)."""
    started: list[WorkerProcess] = []
    log_dir = Path(os.environ["T2I_TEST_RUN_DIR"]) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    def start(index: int, queue: str | None = None, env: dict[str, str] | None = None) -> WorkerProcess:
        """`env`: variables to set on top of worker_env (another "host": its own media, storage)."""
        queue = queue or gpu_queue(index)
        worker = WorkerProcess(queue, index, {**worker_env, **(env or {})}, log_dir / f"{queue}-{len(started)}.log")
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def gpu_workers(start_worker) -> list[WorkerProcess]:
    """Both GPU slots served by real worker processes for the whole session."""
    from django.conf import settings

    return [start_worker(i) for i in range(settings.T2I_WORKERS)]


# Failed logins (django-axes) are rows in the test database, so each test's rollback or flush resets
# them: no test inherits another's lockout (tests/test_login_protection.py checks it).
@pytest.fixture
def user(db, django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def other_user(db, django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def api(user):
    from knox.models import AuthToken
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=user)[1]}")
    return client


@pytest.fixture
def browser():
    """Headless Chromium for the browser tests (each test module skips when it is not installed)."""
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # the live server's ORM calls from Playwright's loop thread
    from playwright.sync_api import sync_playwright

    from tests.helpers import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
        # The test's own ORM calls ran beside Playwright's event loop, which gives them a connection of their
        # own that pytest-django does not close: left open, it kept the test database from being dropped.
        from django.db import connections

        connections.close_all()


@pytest.fixture
def nirvana_policy(embedded_services):
    """NIRVANA serves every request at its own K*: plain ApproxC, no plan to wait for."""
    from tests.helpers import serving_config
    from webapp.serving import controller, live_policy

    live_policy.live_policy.reset()
    controller.reset_controller_state()
    serving_config(policy="nirvana")
    yield
    live_policy.live_policy.reset()


def _is_deadlock(exc: BaseException | None) -> bool:
    import psycopg

    while exc is not None:
        if isinstance(exc, psycopg.errors.DeadlockDetected):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_a_writing_worker():
    """Worker processes live for the whole run, so one may still be writing a row (finishing a batch a test
    left behind) while a transactional test's teardown flushes the database. TRUNCATE and the worker's UPDATE
    can then wait on each other, and PostgreSQL breaks the cycle by failing one ("deadlock detected"); a
    failed flush would leave the test's rows for the next test. The flush is retried: by then the worker's
    transaction has ended, and its later writes find no row."""
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def fixture_teardown(self):
        for attempt in range(1, 6):
            try:
                return original(self)
            except Exception as exc:
                if attempt == 5 or not _is_deadlock(exc):
                    raise
                time.sleep(0.2 * attempt)

    TransactionTestCase._fixture_teardown = fixture_teardown
    yield
    TransactionTestCase._fixture_teardown = original
