"""gunicorn settings for `make run` and compose (`gunicorn -c python:webapp.gunicorn_conf …`).

Errors that gunicorn answers itself, before Django sees the request (a request line or header field
over its limits: 414 / 431, a malformed request: 400), would be small HTML pages. Every error of this
service is JSON (README "Security and privacy"), so its error writer is replaced by one that sends
`{"detail": …}`. The master loads this file before it forks the workers, which inherit the change.
"""

from __future__ import annotations

import json

from gunicorn import util

# gunicorn's own limits (its defaults, spelled out): a header field over 8190 bytes → 431, a request
# line over 4094 bytes → 414, more than 100 header fields → 431.
limit_request_field_size = 8190
limit_request_line = 4094
limit_request_fields = 100


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
