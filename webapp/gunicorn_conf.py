"""gunicorn settings for `make run` and compose (`gunicorn -c python:webapp.gunicorn_conf …`).

Errors that gunicorn answers itself, before Django sees the request (a request line or header field
over its limits: 414 / 431, a malformed request: 400), would be small HTML pages. Every error of this
service is JSON (README "Security and privacy"), so its error writer is replaced by one that sends
`{"detail": …}`. The master loads this file before it forks the workers, which inherit the change.
"""

from __future__ import annotations

import json
import os

from gunicorn import util

# gunicorn's own limits (its defaults, spelled out): a header field over 8190 bytes → 431, a request
# line over 4094 bytes → 414, more than 100 header fields → 431.
limit_request_field_size = 8190
limit_request_line = 4094
limit_request_fields = 100


def default_workers(cores: int) -> int:
    """One process per core: a process runs Python on one core at a time (the GIL), so fewer leave cores
    idle and more only add memory (each holds its own prompt embedder). At least 2, so a restart or a slow
    request never leaves nobody answering."""
    return max(2, cores)


# Threads per process: a submit spends most of its time waiting (PostgreSQL, Redis, the embedder's batch),
# and 8 threads keep a core busy through those waits; they are also what the embedder batches together.
DEFAULT_THREADS = 8

# `-w` / `--threads` on the command line win over these; WEB_CONCURRENCY and T2I_WEB_THREADS set them here.
workers = int(os.environ.get("WEB_CONCURRENCY") or default_workers(len(os.sched_getaffinity(0))))
threads = int(os.environ.get("T2I_WEB_THREADS") or DEFAULT_THREADS)


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    body = json.dumps({"detail": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (
        f"HTTP/1.1 {int(status_int)} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = write_json_error
