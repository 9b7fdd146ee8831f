"""Replaying arrivals over HTTP: submit each request at its trace time, then wait for all of them to end.

* Submission: a dispatcher loop sleeps until each arrival's wall time and hands the POST to a small thread
  pool, so a slow response never delays later arrivals. Each POST carries an `Idempotency-Key`, so the one
  retry after a connection error or timeout cannot create a second row. Anything but 202 is recorded as a
  failed arrival with its status and message (never dropped). If the client falls more than `lag_limit_s`
  behind the schedule, the arrivals it could not send are recorded as failed ("not sent") rather than sent
  late without bound.
* Waiting: every `poll_s` it lists the user's queued and running rows (a few pages: only active rows); a
  request of ours in neither has ended. The final rows are then read back (the list, newest first, then
  single GETs for any it missed) and any that are in fact still active go back to waiting. Bounded by a
  deadline; what has not ended by then is reported.

Every loop here is bounded in iterations and in time.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime

import requests

TERMINAL = ("succeeded", "failed", "cancelled", "expired")
ACTIVE = ("queued", "running")
SEED_MAX = 2**32 - 1


class ApiError(RuntimeError):
    pass


class ApiClient:
    """Token-authenticated client of /api/v1/generations/ (one requests.Session per thread)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        self.base = base_url.rstrip("/")
        self.endpoint = f"{self.base}/api/v1/generations/"
        self.headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        self.timeout = (min(5.0, timeout_s), timeout_s)
        self._local = threading.local()

    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers.update(self.headers)
        return s

    def post_generation(self, prompt: str, seed: int, key: str, retries: int = 1) -> tuple[int, dict | str]:
        """POST one request; (status code, JSON body or text). Status 0: no HTTP answer (error text)."""
        last = ""
        for _attempt in range(retries + 1):
            try:
                r = self.session().post(
                    self.endpoint,
                    json={"prompt": prompt, "seed": seed},
                    headers={"Idempotency-Key": key},
                    timeout=self.timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            try:
                return r.status_code, r.json()
            except ValueError:
                return r.status_code, r.text[:500]
        return 0, last

    def get_json(self, url: str, params: dict | None = None) -> dict:
        r = self.session().get(url, params=params, timeout=self.timeout)
        if r.status_code != 200:
            raise ApiError(f"GET {r.url} → HTTP {r.status_code}: {r.text[:300]}")
        return r.json()

    def check(self) -> None:
        """Fail early, with a clear message, when the server is unreachable or the token is refused."""
        try:
            r = self.session().get(self.endpoint, params={"status": "queued"}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach {self.endpoint}: {exc}") from exc
        if r.status_code in (401, 403):
            raise ApiError(
                f"{self.endpoint} refused the token (HTTP {r.status_code}: revoked, expired or unknown); pass "
                f"--token with one made at /tokens/ or by `manage.py create_api_token <user>`"
            )
        if r.status_code != 200:
            raise ApiError(f"GET {self.endpoint} → HTTP {r.status_code}: {r.text[:300]}")

    def list_rows(self, status: str | None = None, max_pages: int = 1000, stop=None) -> list[dict]:
        """Rows of the list endpoint (newest first), following `next` for at most `max_pages` pages.
        `stop(page_rows)` may end the walk early."""
        out: list[dict] = []
        url, params = self.endpoint, ({"status": status} if status else None)
        for _ in range(max_pages):
            page = self.get_json(url, params)
            rows = page.get("results", [])
            out.extend(rows)
            url, params = page.get("next"), None
            if not url or not rows or (stop is not None and stop(rows)):
                break
        return out

    def count(self, status: str) -> int:
        return int(self.get_json(self.endpoint, {"status": status}).get("count", 0))


@dataclass
class Arrival:
    """One trace arrival as the client saw it. Times are wall seconds from the run's start (t0)."""

    index: int
    due: float
    prompt: str
    seed: int
    sent: float = math.nan
    status_code: int | None = None
    request_id: str | None = None
    error: str | None = None
    post_s: float = math.nan

    @property
    def accepted(self) -> bool:
        return self.request_id is not None


@dataclass
class ReplayResult:
    arrivals: list[Arrival]
    t0_wall: float  # time.time() at trace time 0
    rows: dict[str, dict] = field(default_factory=dict)  # request id → final row (API JSON)
    unfinished: dict[str, str] = field(default_factory=dict)  # request id → last status seen
    replay_wall_s: float = 0.0
    drain_wall_s: float = 0.0

    @property
    def accepted_ids(self) -> list[str]:
        return [a.request_id for a in self.arrivals if a.accepted]


def replay(
    client: ApiClient,
    due_wall: list[float],
    prompts: list[str],
    seeds: list[int],
    *,
    threads: int = 16,
    lag_limit_s: float = 60.0,
    run_id: str | None = None,
    progress=None,
    lead_s: float = 0.3,
) -> ReplayResult:
    """Send request i at t0 + due_wall[i] (seconds). Returns every arrival with its outcome."""
    run_id = run_id or uuid.uuid4().hex[:12]
    arrivals = [Arrival(i, float(d), p, int(s)) for i, (d, p, s) in enumerate(zip(due_wall, prompts, seeds))]
    t0_mono = time.monotonic() + lead_s
    t0_wall = time.time() + lead_s
    last_due = arrivals[-1].due if arrivals else 0.0
    hard_stop = t0_mono + last_due + lag_limit_s
    lock = threading.Lock()

    def send(a: Arrival) -> None:
        now = time.monotonic()
        if now > hard_stop or now - (t0_mono + a.due) > lag_limit_s:
            a.sent = now - t0_mono
            a.error = f"not sent: the client fell more than {lag_limit_s:g} s behind the trace"
        else:
            a.sent = now - t0_mono
            code, body = client.post_generation(a.prompt, a.seed, f"loadgen-{run_id}-{a.index}")
            a.post_s = time.monotonic() - now
            a.status_code = code
            if code == 202 and isinstance(body, dict) and body.get("id"):
                a.request_id = str(body["id"])
            elif code == 0:
                a.error = f"no response: {body}"
            else:
                detail = body.get("detail", body) if isinstance(body, dict) else body
                a.error = f"HTTP {code}: {str(detail)[:300]}"
        if progress is not None:
            with lock:
                progress.update(1)
                if a.error:
                    progress.set_postfix_str(f"errors {sum(1 for x in arrivals if x.error)}")

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="loadgen") as pool:
        futures = []
        for a in arrivals:  # bounded: one pass over the arrivals
            delay = t0_mono + a.due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(send, a))
        # every send ends within its HTTP timeouts (2 tries); bound the wait anyway
        budget = max(0.0, hard_stop - time.monotonic()) + 2 * (client.timeout[0] + client.timeout[1]) + 5
        done, not_done = wait(futures, timeout=budget)
        for f in not_done:
            f.cancel()
    for a in arrivals:
        if math.isnan(a.sent):
            a.sent = a.due  # never sent: it "arrived" (and failed) on schedule
            a.error = a.error or "not sent: the replay ran out of time"
    return ReplayResult(arrivals=arrivals, t0_wall=t0_wall, replay_wall_s=time.monotonic() - t0_mono)


def _active_ids(client: ApiClient, max_pages: int) -> set[str]:
    ids: set[str] = set()
    for st in ACTIVE:
        ids.update(str(r["id"]) for r in client.list_rows(st, max_pages=max_pages))
    return ids


def fetch_rows(client: ApiClient, ids: set[str], since_wall: float, threads: int = 8) -> dict[str, dict]:
    """The current rows of `ids`: walk the list (newest first) back to `since_wall`, then GET any missed."""
    found: dict[str, dict] = {}
    cutoff = since_wall - 60.0  # the server's clock may differ a little from ours

    def stop(page: list[dict]) -> bool:
        for r in page:
            if str(r["id"]) in ids:
                found[str(r["id"])] = r
        if len(found) >= len(ids):
            return True
        try:
            oldest = datetime.fromisoformat(page[-1]["created_at"].replace("Z", "+00:00")).timestamp()
        except (KeyError, ValueError, TypeError):
            return False
        return oldest < cutoff

    pages = 2 * math.ceil(len(ids) / 20) + 10
    client.list_rows(None, max_pages=pages, stop=stop)
    missing = [i for i in ids if i not in found]
    if missing:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for rid, row in zip(missing, pool.map(lambda i: _get_or_none(client, i), missing)):
                if row is not None:
                    found[rid] = row
    return found


def _get_or_none(client: ApiClient, rid: str) -> dict | None:
    try:
        return client.get_json(f"{client.endpoint}{rid}/")
    except (ApiError, requests.RequestException):
        return None


def wait_for_end(
    client: ApiClient, result: ReplayResult, timeout_s: float, poll_s: float = 1.0, progress=None
) -> ReplayResult:
    """Wait (≤ timeout_s) until every accepted request is terminal; fill result.rows / .unfinished."""
    ids = set(result.accepted_ids)
    t_start = time.monotonic()
    deadline = t_start + timeout_s
    rows: dict[str, dict] = {}
    pending = set(ids)
    ended_shown = 0
    max_pages = math.ceil(len(ids) / 20) + 20
    rounds = int(timeout_s / max(poll_s, 0.05)) + 2
    for _ in range(rounds):  # bounded in count and by the deadline
        if not pending:
            break
        try:
            active = _active_ids(client, max_pages) & pending
        except (ApiError, requests.RequestException):
            active = pending  # transient: try again next round
        if not active:  # the lists say all ended: read them back to be sure
            got = fetch_rows(client, pending, result.t0_wall)
            rows.update({i: r for i, r in got.items() if r.get("status") in TERMINAL})
            pending = {i for i in pending if i not in rows}
            active = pending
        if progress is not None:
            ended = len(ids) - len(active)
            if ended > ended_shown:
                progress.update(ended - ended_shown)
                ended_shown = ended
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
    if pending:  # final read of what is left
        got = fetch_rows(client, pending, result.t0_wall)
        for i in list(pending):
            r = got.get(i)
            if r is not None and r.get("status") in TERMINAL:
                rows[i] = r
                pending.discard(i)
        result.unfinished = {i: (got[i].get("status", "?") if i in got else "unknown") for i in pending}
        for i in pending:
            if i in got:
                rows[i] = got[i]
    result.rows = rows
    result.drain_wall_s = time.monotonic() - t_start
    return result


def request_seeds(n: int, seed: int) -> list[int]:
    """Per-request image seeds: deterministic for --seed (seed + i, wrapped to the API's range)."""
    return [(seed + i) % (SEED_MAX + 1) for i in range(n)]
