"""The `make run` supervisor (webapp/stack/supervisor.py) with real child processes: back-off, the
failed state, restarts of a killed process and of the embedded Redis and PostgreSQL, a bounded stop,
the status file and its reader, and stopping with make (parent_watch.py).

Every wait is on a condition with a generous timeout; nothing asserts how long something took, so a
busy machine only makes these tests slower.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from webapp.dashboard import process_status
from webapp.stack import status_file
from webapp.stack.services import Postgres, Redis, free_port, port_open
from webapp.stack.supervisor import Backoff, Program, Supervisor

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 90.0  # generous: these only wait on conditions
FAST = Backoff(initial_s=0.05, max_s=0.4, stable_s=30.0, failed_exits=3, failed_window_s=120.0)


def command(argv: list[str]) -> callable:
    def launch() -> subprocess.Popen:
        return subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return launch


def supervise_until(sup: Supervisor, condition, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup.tick()
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s: {sup.snapshot()}")


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def read_file(path: Path) -> dict:
    return json.loads(path.read_text())["processes"]


@pytest.fixture
def supervisor(tmp_path):
    sup = Supervisor(tmp_path / "run" / "processes.json", FAST)
    yield sup
    sup.stop_all(programs_s=5, services_s=5)


def test_back_off_doubles_to_its_cap_and_resets_after_a_stable_run():
    b = Backoff(initial_s=0.5, max_s=30, stable_s=10)
    delays, previous = [], None
    for _ in range(9):
        previous = b.next_delay(previous, uptime=1.0)
        delays.append(previous)
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert b.next_delay(30, uptime=10.0) == 0.5  # it ran long enough: start over


def test_crash_looper_is_marked_failed_while_the_healthy_process_keeps_running(supervisor):
    supervisor.start(Program("sleeper", command([sys.executable, "-c", "import time; time.sleep(600)"])))
    supervisor.start(Program("crasher", command(["sh", "-c", "exit 3"])))
    sleeper_pid = supervisor.children["sleeper"].proc.pid

    supervise_until(supervisor, lambda: supervisor.children["crasher"].state == "failed")

    supervise_until(supervisor, lambda: supervisor.children["crasher"].restarts >= FAST.failed_exits + 1)
    sleeper = supervisor.children["sleeper"]
    assert sleeper.state == "running" and sleeper.proc.pid == sleeper_pid and alive(sleeper_pid)
    assert sleeper.restarts == 0

    supervisor.tick()
    crasher, healthy = read_file(supervisor.status_path)["crasher"], read_file(supervisor.status_path)["sleeper"]
    assert crasher["state"] == "failed"  # still failed while retried: no run lasted stable_s
    assert crasher["last_exit"] == 3 and crasher["restarts"] >= FAST.failed_exits
    assert (healthy["state"], healthy["pid"], healthy["restarts"]) == ("running", sleeper_pid, 0)


def test_a_failed_process_stays_failed_when_its_exits_thin_out(supervisor):
    supervisor.start(Program("crasher", command(["sh", "-c", "exit 3"])))
    supervise_until(supervisor, lambda: supervisor.children["crasher"].state == "failed")
    crasher = supervisor.children["crasher"]
    # Later exits come at most one per window (the capped back-off can be longer than the window):
    # simulated with a clock that jumps past the window while the process waits out its back-off,
    # and stands still while it runs (so no run looks long enough to count as stable).
    clock = time.monotonic()
    for _ in range(FAST.failed_exits + 1):
        restarts = crasher.restarts
        clock += FAST.failed_window_s + 1
        supervisor.tick(clock)
        assert crasher.restarts == restarts + 1
        while crasher.proc is not None:
            time.sleep(0.02)
            supervisor.tick(clock)
        assert crasher.state == "failed" and len(crasher.exits) == 1


def test_a_failed_process_that_comes_back_is_running_again(supervisor, tmp_path):
    # Crashes on its first three starts (a dependency "down"), then stays up.
    counter = tmp_path / "starts"
    script = (
        f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ "$n" -ge 3 ] && exec sleep 600; exit 1'
    )
    sup = Supervisor(supervisor.status_path, Backoff(initial_s=0.05, max_s=0.2, stable_s=1.0, failed_exits=3))
    try:
        sup.start(Program("flaky", command(["sh", "-c", script])))
        supervise_until(sup, lambda: sup.children["flaky"].state == "failed")
        supervise_until(sup, lambda: sup.children["flaky"].state == "running")
        assert sup.children["flaky"].restarts == 3 and alive(sup.children["flaky"].proc.pid)
    finally:
        sup.stop_all()


def test_a_killed_process_is_restarted_with_a_new_pid(supervisor):
    supervisor.start(Program("sleeper", command(["sleep", "600"])))
    first = supervisor.children["sleeper"].proc.pid
    os.kill(first, signal.SIGKILL)
    supervise_until(
        supervisor,
        lambda: supervisor.children["sleeper"].proc is not None and supervisor.children["sleeper"].proc.pid != first,
    )
    child = supervisor.children["sleeper"]
    assert child.state == "running" and child.restarts == 1 and child.last_exit == -signal.SIGKILL
    assert alive(child.proc.pid)


def test_stop_all_leaves_nothing_running_not_even_grandchildren(supervisor, tmp_path):
    grandchild_pid_file = tmp_path / "grandchild.pid"
    # A leader that ignores SIGTERM and forks a grandchild: only the group kill gets rid of both.
    supervisor.start(
        Program(
            "stubborn",
            command(["sh", "-c", f"trap '' TERM; sleep 600 & echo $! > {grandchild_pid_file}; wait"]),
        )
    )
    supervise_until(supervisor, lambda: grandchild_pid_file.exists() and grandchild_pid_file.read_text().strip())
    leader, grandchild = supervisor.children["stubborn"].proc.pid, int(grandchild_pid_file.read_text())
    supervisor.stop_all(programs_s=1, services_s=1)
    deadline = time.monotonic() + TIMEOUT
    while (alive(leader) or alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(leader) and not alive(grandchild)
    assert read_file(supervisor.status_path)["stubborn"]["state"] == "stopped"


def test_the_dashboard_reads_what_the_supervisor_writes(tmp_path):
    assert process_status.RELATIVE_PATH == status_file.RELATIVE_PATH
    path = status_file.status_path(tmp_path)
    status_file.write_status(
        path, {"web": {"state": "failed", "pid": None, "restarts": 7, "last_exit": -9, "since": 1_700_000_000.0}}
    )
    [row] = process_status.read_processes(path)
    assert (row.name, row.state, row.pid, row.restarts, row.last_exit, row.up) == ("web", "failed", None, 7, -9, False)
    assert row.since.timestamp() == 1_700_000_000.0
    stale = time.time() + process_status.STALE_AFTER_S + 1
    assert process_status.read_processes(path, now=stale) is None  # its supervisor stopped refreshing it
    assert process_status.read_processes(tmp_path / "missing.json") is None


# --- the embedded services -----------------------------------------------------------------------
# Their own instances on free ports in a temporary folder: the test session's shared PostgreSQL and
# Redis (tests/conftest.py) are never touched.


@pytest.fixture
def service_dir():
    path = Path(tempfile.mkdtemp(prefix="t2i-supervisor-test-"))
    path.chmod(0o755)  # PostgreSQL's service user (when we are root) must reach it
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


# service_dir before supervisor: torn down after it, so a server is stopped before its folder goes.
def test_killed_redis_is_restarted_and_answers_with_its_password(service_dir, supervisor):
    import redis as redis_client

    server = Redis(service_dir / "redis", free_port(), persist=False)
    server.start()
    supervisor.adopt(Program("redis", server.launch, stop_last=True), server.proc)
    first = server.proc.pid
    os.kill(first, signal.SIGKILL)

    supervise_until(supervisor, lambda: server.proc.pid != first and port_open(server.port))
    client = redis_client.Redis.from_url(server.url, socket_connect_timeout=5)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            assert client.ping()
            break
        except redis_client.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert supervisor.children["redis"].restarts == 1 and supervisor.children["redis"].state == "running"


def test_killed_postgres_is_restarted_and_serves_the_database(service_dir, supervisor):
    import psycopg

    # Durable commits (not fast_unsafe): a crash must not lose the database start() just created.
    server = Postgres(service_dir / "pg", free_port(), shared_buffers="16MB")
    server.start()
    supervisor.adopt(Program("postgres", server.launch, signal.SIGINT, stop_last=True), server.proc)
    first = server.proc.pid
    with psycopg.connect(server.url, autocommit=True):  # a backend that outlives its postmaster
        os.kill(first, signal.SIGKILL)

    def serves() -> bool:
        if server.proc is None or server.proc.pid == first:
            return False
        try:
            with psycopg.connect(server.url, connect_timeout=5) as conn:
                return conn.execute("SELECT extname FROM pg_extension WHERE extname = 'vector'").fetchone() is not None
        except psycopg.OperationalError:
            return False

    supervise_until(supervisor, serves)
    assert supervisor.children["postgres"].restarts >= 1


# --- stopping with make ----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from webapp.stack.parent_watch import ParentWatch

    out = Path(sys.argv[1])
    def on_term(signum, frame):
        out.write_text("SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    watch = ParentWatch()
    out.write_text("watching")
    while not watch.parent_is_stopping():
        time.sleep(0.1)
    out.write_text("parent is stopping")
    """
)


@pytest.mark.parametrize(
    "sig, expected",
    [(signal.SIGINT, "parent is stopping"), (signal.SIGTERM, "SIGTERM"), (signal.SIGKILL, "SIGTERM")],
)
def test_a_child_execd_by_make_stops_when_make_is_signalled(tmp_path, sig, expected):
    (tmp_path / "child.py").write_text(CHILD)
    out = tmp_path / "out.txt"
    (tmp_path / "Makefile").write_text(f"run:\n\texec {sys.executable} {tmp_path / 'child.py'} {out}\n")
    make = subprocess.Popen(
        ["make", "-s", "-C", str(tmp_path), "run"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # as a terminal's job: its own group …
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # … where SIGINT is not ignored
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out.exists() and out.read_text() == "watching"):
            assert time.monotonic() < deadline and make.poll() is None, "the child never started watching"
            time.sleep(0.05)
        os.kill(make.pid, sig)
        while not (out.read_text() == expected and make.poll() is not None):
            assert time.monotonic() < deadline, f"child says {out.read_text()!r}; make exit {make.poll()}"
            time.sleep(0.05)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
