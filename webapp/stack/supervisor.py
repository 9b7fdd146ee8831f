"""An init-like supervisor: keeps every process of `make run` up, each with its own restart back-off.

Each program is restarted whenever it exits, whatever the exit code (all of them are meant to run
until stopped). The wait before a restart starts at `Backoff.initial_s` and doubles on each exit
that follows a short run, up to `Backoff.max_s`; a run that lasted `Backoff.stable_s` resets it
(Kubernetes' CrashLoopBackOff, with shorter times). A program that exited `Backoff.failed_exits`
times within `Backoff.failed_window_s` is marked `failed` and reported, and keeps being retried at
the capped back-off: it may be waiting on something that comes back (a database, a port), and the
rest of the stack keeps serving meanwhile. It is `running` again once a run lasts `stable_s`.

The state of every program is written to a JSON status file (status_file.py) on every change and
every few seconds, for the dashboard and /metrics.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .status_file import ProcessState, write_status

log = logging.getLogger("t2i.supervisor")

STATUS_REFRESH_S = 5.0  # the file's `updated_at` proves the supervisor is alive to its readers


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 10.0  # a run this long counts as healthy: the back-off starts again from initial_s
    failed_exits: int = 5  # this many exits …
    failed_window_s: float = 60.0  # … within this window mark the program failed

    def next_delay(self, previous: float | None, uptime: float) -> float:
        """Wait before the next start, given the last wait (None: never restarted) and how long the
        run that just ended lasted."""
        if previous is None or uptime >= self.stable_s:
            return self.initial_s
        return min(self.max_s, previous * 2)


@dataclass
class Program:
    """How to start one supervised process. `launch` must return at once (no waiting for readiness)
    with a process that leads its own process group (start_new_session), so that stopping it also
    reaches whatever it forked."""

    name: str
    launch: Callable[[], subprocess.Popen]
    stop_signal: int = signal.SIGTERM
    stop_last: bool = False  # the services (PostgreSQL, Redis) stop after the programs that use them
    log_path: Path | None = None


@dataclass
class Supervised:
    program: Program
    proc: subprocess.Popen | None = None
    state: str = ProcessState.STARTING
    restarts: int = 0
    last_exit: int | None = None
    since: float = field(default_factory=time.time)  # wall clock of the last state change
    started_at: float = 0.0  # monotonic
    delay: float | None = None
    next_start: float = 0.0  # monotonic
    exits: deque = field(default_factory=deque)  # monotonic times of recent exits

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "could not be started"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a program's whole process group (the leader and what it forked), if any is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Supervisor:
    def __init__(self, status_path: Path, backoff: Backoff | None = None) -> None:
        self.status_path = Path(status_path)
        self.backoff = backoff or Backoff()
        self.children: dict[str, Supervised] = {}
        self._written_at = float("-inf")
        self._dirty = True

    # --- starting -----------------------------------------------------------------------------
    def adopt(self, program: Program, proc: subprocess.Popen) -> None:
        """Supervise a process already started (and waited for) by the caller, e.g. PostgreSQL."""
        child = Supervised(program, proc=proc, started_at=time.monotonic())
        child.set_state(ProcessState.RUNNING)
        self.children[program.name] = child
        self._dirty = True

    def start(self, program: Program) -> None:
        child = Supervised(program)
        self.children[program.name] = child
        self._launch(child, time.monotonic())

    def _launch(self, child: Supervised, now: float) -> None:
        try:
            child.proc = child.program.launch()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log.error("%s could not be started: %s", child.program.name, exc)
            self._exited(child, None, now)
            return
        child.started_at = now
        if child.state != ProcessState.FAILED:  # failed until a run proves stable (see tick)
            child.set_state(ProcessState.RUNNING)
        self._dirty = True

    # --- watching -----------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """One look at every program: notice exits, restart the ones whose back-off has passed,
        clear `failed` after a stable run, keep the status file fresh."""
        now = time.monotonic() if now is None else now
        for child in self.children.values():
            if child.proc is None:
                if now >= child.next_start:
                    child.restarts += 1
                    log.info("%s: restart %d", child.program.name, child.restarts)
                    self._launch(child, now)
                continue
            code = child.proc.poll()
            if code is not None:
                self._exited(child, code, now)
            elif child.state == ProcessState.FAILED and now - child.started_at >= self.backoff.stable_s:
                log.warning("%s has stayed up %.0f s: running again", child.program.name, self.backoff.stable_s)
                child.set_state(ProcessState.RUNNING)
                self._dirty = True
        self._write_status(now)

    def _exited(self, child: Supervised, code: int | None, now: float) -> None:
        name = child.program.name
        if child.proc is not None:
            kill_group(child.proc.pid)  # leftovers of a dead leader (pool processes, backends) go too
        uptime = now - child.started_at if child.proc is not None else 0.0
        child.proc, child.last_exit = None, code
        child.exits.append(now)
        while child.exits and now - child.exits[0] > self.backoff.failed_window_s:
            child.exits.popleft()
        child.delay = self.backoff.next_delay(child.delay, uptime)
        child.next_start = now + child.delay
        where = f"; log: {child.program.log_path}" if child.program.log_path else ""
        # Failed stays failed until a run lasts stable_s (tick): at the capped back-off fewer exits fit in
        # the window, and that must not read as recovery.
        if child.state == ProcessState.FAILED or len(child.exits) >= self.backoff.failed_exits:
            if child.state != ProcessState.FAILED:
                log.error(
                    "%s FAILED: %d exits within %.0f s; the rest of the stack keeps serving, and it is "
                    "retried with back-off up to every %.0f s%s",
                    name,
                    len(child.exits),
                    self.backoff.failed_window_s,
                    self.backoff.max_s,
                    where,
                )
            child.set_state(ProcessState.FAILED)
        else:
            child.set_state(ProcessState.RESTARTING)
        log.warning("%s %s; restarting it in %.1f s%s", name, describe_exit(code), child.delay, where)
        self._dirty = True

    def _write_status(self, now: float) -> None:
        if not self._dirty and now - self._written_at < STATUS_REFRESH_S:
            return
        try:
            write_status(self.status_path, self.snapshot())
        except OSError as exc:  # a full disk must not stop the supervision itself
            log.error("could not write %s: %s", self.status_path, exc)
        self._written_at, self._dirty = now, False

    def snapshot(self) -> dict[str, dict]:
        return {
            name: {
                "state": c.state,
                "pid": c.proc.pid if c.proc is not None else None,
                "restarts": c.restarts,
                "last_exit": c.last_exit,
                "since": c.since,
            }
            for name, c in self.children.items()
        }

    def run(self, should_stop: Callable[[], bool] = lambda: False, period_s: float = 0.5) -> None:
        """Supervise until `should_stop()` says so (or a signal handler raises)."""
        while not should_stop():
            self.tick()
            time.sleep(period_s)

    # --- stopping -----------------------------------------------------------------------------
    def stop_all(self, programs_s: float = 4.5, services_s: float = 3.0) -> None:
        """Stop the programs, then the services they use; whatever has not exited by its deadline is
        killed with its whole process group. Bounded: `make run` must be gone within 10 s."""
        first = [c for c in self.children.values() if not c.program.stop_last]
        last = [c for c in self.children.values() if c.program.stop_last]
        for group, budget in ((first, programs_s), (last, services_s)):
            self._stop_group(group, budget)
        for child in self.children.values():
            child.set_state(ProcessState.STOPPED)
        self._dirty = True
        self._write_status(time.monotonic())

    def _stop_group(self, children: list[Supervised], budget_s: float) -> None:
        running = [c for c in children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(child.program.stop_signal)
        deadline = time.monotonic() + budget_s
        for child in running:
            try:
                child.proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", child.program.name, budget_s)
        for child in children:
            if child.proc is not None:
                kill_group(child.proc.pid)  # the leader if it is still there, and anything it left behind
                child.proc.wait()
                child.proc = None
