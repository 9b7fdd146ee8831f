"""Where a submit's CPU goes, without a profiler's overhead (`manage.py profile_submit`, docs/submit_path.md).

cProfile multiplies the cost of code that makes many small Python calls (Django's ORM, DRF, kombu) several
times over, so its shares mislead. This runs the API in-process (Django's test client, the stack's own
database and Redis, the demo user's token) and wraps the parts of the path in timers that add up each
part's *thread* CPU (`time.thread_time`): what the request's own thread spends in it. The embedder runs in
its own thread, so it is reported as the process's CPU outside the request threads. With --threads the POSTs
come from several threads at once, as in one gunicorn process, and the embedder's batch size is counted.

Parts indented deeper are inside the part above them (route_request includes cluster_view); "the rest" is
the request thread's CPU outside every outer part (Django, DRF, middleware, submit's own lines). The wrapping
replaces module attributes for the life of the process, which is why this is a command of its own.
"""

from __future__ import annotations

import functools
import importlib
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from scheduler import embedding_batcher

# (module, attribute, label): the submit path's parts, where submit() looks them up.
PARTS = (
    ("webapp.serving.submission", "check_broker", "  broker PING"),
    ("webapp.serving.submission", "_check_in_flight", "  in-flight count"),
    ("webapp.serving.submission", "default_priority", "  default priority"),
    ("webapp.serving.submission", "embed_prompt", "  waiting for the embedder"),
    ("webapp.serving.submission", "check_near_duplicates", "  probing limit"),
    ("webapp.serving.submission", "find_neighbour", "  pgvector neighbour"),
    ("webapp.serving.submission", "route_request", "  route_request"),
    ("webapp.serving.routing", "cluster_view", "    queue depths (cluster_view)"),
    ("webapp.serving.routing", "live_workers_and_marks", "    worker heartbeats and marks (MGET)"),
    ("django.db.models.base", "Model.save", "  INSERT"),
    ("django.db.backends.base.base", "BaseDatabaseWrapper.commit", "  COMMIT"),
    ("webapp.ledger.publishing", "app.send_task", "  Celery send_task"),
    ("rest_framework.serializers", "Serializer.is_valid", "request body validation"),
    ("rest_framework.serializers", "Serializer.data", "response body (serializer)"),
    ("rest_framework.views", "APIView.perform_authentication", "token authentication"),
    ("rest_framework.views", "APIView.check_throttles", "rate limit"),
    ("rest_framework.generics", "GenericAPIView.get_object", "the row's query (GET)"),
    ("rest_framework.renderers", "JSONRenderer.render", "JSON rendering"),
)


@dataclass
class Split:
    calls: int = 0
    process_cpu_s: float = 0.0
    request_thread_cpu_s: float = 0.0
    parts: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def lines(self, what: str) -> list[str]:
        ms = 1000.0 / max(1, self.calls)
        other = self.process_cpu_s - self.request_thread_cpu_s
        lines = [
            f"{what}: {self.calls} requests, CPU per request {self.process_cpu_s * ms:.2f} ms "
            f"(request threads {self.request_thread_cpu_s * ms:.2f} ms, the embedder's thread {other * ms:.2f} ms)"
        ]
        for label, seconds in sorted(self.parts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {seconds * ms:7.2f} ms  {label}")
        outer = sum(seconds for label, seconds in self.parts.items() if not label.startswith("    "))
        lines.append(f"  {(self.request_thread_cpu_s - outer) * ms:7.2f} ms  the rest (Django, DRF, middleware, …)")
        return lines


_current: Split | None = None


def _timed(fn, label: str):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            if _current is not None:
                _current.parts[label] += time.thread_time() - start

    return timed


def install_timers() -> None:
    """Wrap every part of PARTS (a property's getter for `Serializer.data`)."""
    for module, attribute, label in PARTS:
        owner = importlib.import_module(module)
        *path, name = attribute.split(".")
        for step in path:
            owner = getattr(owner, step)
        current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name)
        if isinstance(current, property):
            setattr(owner, name, property(_timed(current.fget, label)))
        else:
            setattr(owner, name, _timed(getattr(owner, name), label))


def measure(call, n: int, threads: int = 1) -> Split:
    """Run `call(i, client)` n times, spread over `threads` threads (each with its own test client, as a
    gunicorn process's threads each serve their own request), and split the CPU it took."""
    from django.test import Client

    global _current
    split = _current = Split(calls=n - n % threads)
    request_cpu: list[float] = []

    def work(first: int, count: int) -> None:
        client = Client(HTTP_AUTHORIZATION=_authorization, HTTP_HOST="127.0.0.1")
        start = time.thread_time()
        for i in range(first, first + count):
            call(i, client)
        request_cpu.append(time.thread_time() - start)

    per_thread = n // threads
    workers = [threading.Thread(target=work, args=(k * per_thread, per_thread)) for k in range(threads)]
    cpu0 = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    split.process_cpu_s = time.process_time() - cpu0
    split.request_thread_cpu_s = sum(request_cpu)
    _current = None
    return split


_authorization = ""


def count_embedder_batches() -> list[int]:
    """[encoder calls, prompts] of this process's embedder from now on: how well concurrent submits batch.
    Wraps the shared batcher's encoder (scheduler/embedding_batcher.py keeps no count of its own)."""
    shared = embedding_batcher._shared
    counts = [0, 0]
    encode = shared._embed

    def counted(texts: list[str]):
        counts[0] += 1
        counts[1] += len(texts)
        return encode(texts)

    shared._embed = counted
    return counts


def profile(token: str, n: int, threads: int = 1, settle_s: float = 2.0) -> list[str]:
    """POST n distinct prompts from `threads` threads, then GET n statuses (of finished requests) from one,
    in-process; the split as lines."""
    from django.test import Client
    from rest_framework.settings import api_settings

    global _authorization
    _authorization = f"Token {token}"
    # The limits are checked (their cost is measured) but high enough never to refuse, as on bench_submit's
    # stacks. The throttle classes hold this very dict.
    api_settings.DEFAULT_THROTTLE_RATES.update(submit="1000000/min", read="1000000/min")
    salt = random.randrange(1_000_000)

    def post(i: int, client) -> str:
        answer = client.post(
            "/api/v1/generations/", {"prompt": f"a red fox {salt}-{i} in the snow, oil painting"}, "application/json"
        )
        if answer.status_code != 202:
            raise RuntimeError(f"POST answered {answer.status_code}: {answer.content[:300]!r}")
        return answer.json()["id"]

    warm = Client(HTTP_AUTHORIZATION=_authorization, HTTP_HOST="127.0.0.1")
    ids = [post(i, warm) for i in range(20)]  # warm up: the embedder, the token's lookup, the policy
    install_timers()
    batches = count_embedder_batches()
    posts = measure(lambda i, client: post(100 + i, client), n, threads)
    threading.Event().wait(settle_s)  # the warm-up requests finish (emulated workers)

    def get(i: int, client) -> None:
        if client.get(f"/api/v1/generations/{ids[i % len(ids)]}/").status_code != 200:
            raise RuntimeError("GET did not answer 200")

    gets = measure(get, n)
    mean_batch = batches[1] / max(1, batches[0])
    lines = posts.lines(f"POST /api/v1/generations/ from {threads} thread(s)")
    lines.insert(1, f"  embedder: {batches[0]} encoder calls, {mean_batch:.2f} prompts per call")
    return lines + gets.lines("GET /api/v1/generations/{id}/")
