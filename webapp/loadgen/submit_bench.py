"""The submit-path benchmark (`manage.py bench_submit`): how fast the web tier accepts and answers.

Three phases against one running stack, each a plain HTTP client (keep-alive, one connection per client
thread, a different prompt per request):

* idle: N sequential POSTs, each followed by GETs until the row has a `started_at`: POST → worker start
  from the rows' own timestamps (created_at → started_at) on an otherwise idle stack;
* load: C clients POST back to back for a fixed time: accepted/s, POST latency percentiles, the answers
  by status, the CPU the web processes used per accepted request (from /proc), and how busy the whole
  machine was meanwhile;
* reads: C clients GET the status of the requests accepted under load for a fixed time: GET/s, the web
  processes' CPU per GET, and the POST → worker start of those rows (under load: it includes their queue wait).

The client is Python threads on the same machine: its own CPU in each phase is reported (in % of one core), since on
a small machine it competes with the stack it measures.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

_SUBJECTS = (
    "a red fox",
    "an old lighthouse",
    "a glass teapot",
    "a mountain village",
    "a robot gardener",
    "a paper boat",
    "a jazz trio",
    "a desert caravan",
    "a neon alley",
    "a sleeping cat",
)
_PLACES = (
    "in the snow",
    "at dusk",
    "under the sea",
    "on the moon",
    "in a rainforest",
    "in a busy market",
    "on a rooftop",
    "in a library",
    "by a frozen lake",
    "in a wheat field",
)
_STYLES = (
    "oil painting",
    "watercolour",
    "photograph, 35mm",
    "pixel art",
    "pencil sketch",
    "isometric render",
    "ukiyo-e print",
    "studio lighting",
    "cinematic still",
    "children's book illustration",
)


def bench_prompt(i: int, salt: int = 0) -> str:
    """A distinct, plausible prompt for request number `i` (the suffix keeps every one different)."""
    rng = random.Random(i * 7919 + salt)
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_PLACES)}, {rng.choice(_STYLES)}, take {salt}-{i}"


class Client:
    """One keep-alive HTTP connection to the API (not thread-safe: one per client thread)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        self.timeout = timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """(status, JSON body); status 0 for a connection error (the connection is then reopened)."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):  # a keep-alive connection the server closed: reopen once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    return 0, {}
                continue
            try:
                return response.status, json.loads(raw) if raw else {}
            except ValueError:
                return response.status, {}
        return 0, {}

    def post(self, prompt: str) -> tuple[int, dict]:
        return self.request("POST", "/api/v1/generations/", {"prompt": prompt})

    def get(self, request_id: str) -> tuple[int, dict]:
        return self.request("GET", f"/api/v1/generations/{request_id}/")


# --- CPU accounting from /proc ----------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces


def process_tree(root: int) -> list[int]:
    """`root` and every descendant (gunicorn's master and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (those that are gone count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICK, sum(values) / _TICK


def gunicorn_master(port: int) -> int | None:
    """The pid of the gunicorn master bound to `port` (its command line names the bind), if any."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"gunicorn" in a for a in argv) and any(a.endswith(f":{port}".encode()) for a in argv):
            parent = int(_stat_fields(int(entry.name))[1])
            return parent if _is_gunicorn(parent) else int(entry.name)
    return None


def _is_gunicorn(pid: int) -> bool:
    try:
        return b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# --- statistics -----------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def start_delay_s(body: dict) -> float | None:
    """created_at → started_at of a row, in seconds (None until a worker has started it)."""
    if not body.get("started_at") or not body.get("created_at"):
        return None
    return (datetime.fromisoformat(body["started_at"]) - datetime.fromisoformat(body["created_at"])).total_seconds()


@dataclass
class Results:
    """Everything one stack's run measured (seconds unless the name says otherwise)."""

    idle_start: list[float] = field(default_factory=list)
    idle_post: list[float] = field(default_factory=list)
    load_seconds: float = 0.0
    load_post: list[float] = field(default_factory=list)
    load_codes: Counter = field(default_factory=Counter)
    accepted_ids: list[str] = field(default_factory=list)
    web_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    machine_total_s: float = 0.0
    read_seconds: float = 0.0
    read_latency: list[float] = field(default_factory=list)
    read_codes: Counter = field(default_factory=Counter)
    read_web_cpu_s: float = 0.0
    client_cpu_load_s: float = 0.0  # this benchmark's own CPU (its client threads) in each phase
    client_cpu_read_s: float = 0.0
    load_start: dict[str, float] = field(default_factory=dict)  # id → created_at → started_at

    @property
    def accepted(self) -> int:
        return self.load_codes.get(202, 0)

    def summary(self) -> dict[str, float]:
        accepted = max(1, self.accepted)
        load_start = list(self.load_start.values())
        ms = 1000.0
        return {
            "idle POST→start p50 (ms)": percentile(self.idle_start, 50) * ms,
            "idle POST→start p99 (ms)": percentile(self.idle_start, 99) * ms,
            "idle POST latency p50 (ms)": percentile(self.idle_post, 50) * ms,
            "accepted/s": self.accepted / max(self.load_seconds, 1e-9),
            "POST p50 (ms)": percentile(self.load_post, 50) * ms,
            "POST p90 (ms)": percentile(self.load_post, 90) * ms,
            "POST p99 (ms)": percentile(self.load_post, 99) * ms,
            "not accepted": sum(n for code, n in self.load_codes.items() if code != 202),
            "web CPU per accepted (ms)": self.web_cpu_s / accepted * ms,
            "machine busy (%)": 100 * self.machine_busy_s / max(self.machine_total_s, 1e-9),
            "client CPU, load (% core)": 100 * self.client_cpu_load_s / max(self.load_seconds, 1e-9),
            "load POST→start p50 (ms)": percentile(load_start, 50) * ms,
            "load POST→start p99 (ms)": percentile(load_start, 99) * ms,
            "status GET/s": self.read_codes.get(200, 0) / max(self.read_seconds, 1e-9),
            "status GET p99 (ms)": percentile(self.read_latency, 99) * ms,
            "web CPU per GET (ms)": self.read_web_cpu_s / max(1, self.read_codes.get(200, 0)) * ms,
            "client CPU, reads (% core)": 100 * self.client_cpu_read_s / max(self.read_seconds, 1e-9),
        }


# --- the phases -----------------------------------------------------------------------------------------
def idle_phase(base_url: str, token: str, n: int, results: Results, salt: int, wait_s: float = 30.0) -> None:
    """N sequential requests, each waited for until a worker starts it."""
    client = Client(base_url, token)
    for i in range(n):
        t0 = time.perf_counter()
        code, body = client.post(bench_prompt(i, salt))
        results.idle_post.append(time.perf_counter() - t0)
        if code != 202:
            results.load_codes[f"idle {code}"] += 1
            continue
        deadline = time.monotonic() + wait_s
        delay = None
        while time.monotonic() < deadline:
            _, row = client.get(body["id"])
            if delay is None and (delay := start_delay_s(row)) is not None:
                results.idle_start.append(delay)
            if row.get("status") not in ("queued", "running"):
                break  # ended: the next request finds the stack idle again
            time.sleep(0.005)


def _run_clients(n_clients: int, duration_s: float, work) -> float:
    """Run `work(index, deadline)` in n_clients threads; the phase's measured length in seconds."""
    start = time.perf_counter()
    deadline = start + duration_s
    threads = [threading.Thread(target=work, args=(i, deadline), daemon=True) for i in range(n_clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def load_phase(
    base_url: str, token: str, n_clients: int, duration_s: float, web_root: int | None, results: Results, salt: int
) -> None:
    """C clients POST distinct prompts back to back; the web tier's CPU is read before and after."""
    lock = threading.Lock()

    def work(index: int, deadline: float) -> None:
        client = Client(base_url, token)
        i = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            code, body = client.post(bench_prompt(1_000_000 * (index + 1) + i, salt))
            elapsed = time.perf_counter() - t0
            i += 1
            with lock:
                results.load_post.append(elapsed)
                results.load_codes[code] += 1
                if code == 202:
                    results.accepted_ids.append(body["id"])

    pids = process_tree(web_root) if web_root else []
    cpu0, (busy0, total0), client0 = cpu_seconds(pids), machine_busy(), time.process_time()
    results.load_seconds = _run_clients(n_clients, duration_s, work)
    results.web_cpu_s = cpu_seconds(pids) - cpu0
    results.client_cpu_load_s = time.process_time() - client0
    busy1, total1 = machine_busy()
    results.machine_busy_s, results.machine_total_s = busy1 - busy0, total1 - total0


def read_phase(
    base_url: str, token: str, n_clients: int, duration_s: float, results: Results, web_root: int | None = None
) -> None:
    """C clients GET the status of random accepted requests; the rows' timestamps are kept, and the CPU the
    web processes and this client used."""
    if not results.accepted_ids:
        return
    lock = threading.Lock()

    def work(index: int, deadline: float) -> None:
        client = Client(base_url, token)
        rng = random.Random(index)
        while time.perf_counter() < deadline:
            request_id = rng.choice(results.accepted_ids)
            t0 = time.perf_counter()
            code, body = client.get(request_id)
            elapsed = time.perf_counter() - t0
            delay = start_delay_s(body) if code == 200 else None
            with lock:
                results.read_latency.append(elapsed)
                results.read_codes[code] += 1
                if delay is not None:
                    results.load_start[request_id] = delay

    pids = process_tree(web_root) if web_root else []
    cpu0, client0 = cpu_seconds(pids), time.process_time()
    results.read_seconds = _run_clients(n_clients, duration_s, work)
    results.read_web_cpu_s = cpu_seconds(pids) - cpu0
    results.client_cpu_read_s = time.process_time() - client0
