"""The dashboard under live load (issue 12, item 8): does it render, and how fast, while loadgen drives the stack?

    .venv/bin/python -m webapp.loadgen.bench_dashboard \\
        --trace ../shared/data/traces/proteus_twitter/zipf_exponential_300/*.txt \\
        --prompts ../shared/data/prompts/diffusiondb_2m_first_4k.txt --workers 4 --seconds 60

Starts a throw-away stack (`BenchStack`: `webapp.stack.run` with the emulated engine, its own data folder and
ports), makes a staff user and logs in over HTTP as a browser does (the login form, its CSRF cookie), then runs
`manage.py loadgen` against the stack in a subprocess. Meanwhile it GETs the dashboard (`/dashboard/`, each
`--window` in turn) every `--every` seconds through gunicorn, timing the whole answer. Prints the render times
with no load first and then under the load, every answer that was not 200, and loadgen's own summary line.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .bench_stack import BenchStack

ROOT = Path(__file__).resolve().parents[2]
STAFF = "bench-staff"


def django_env(stack: BenchStack) -> dict[str, str]:
    """The environment in which this checkout's manage.py reaches the stack's database and Redis."""

    def secret(name: str) -> str:
        return (stack.data_dir / name).read_text().strip()

    pg = urllib.parse.quote(secret("pg-password.txt"), safe="")
    redis = urllib.parse.quote(secret("redis-password.txt"), safe="")
    return dict(
        stack.env,
        DJANGO_SETTINGS_MODULE="webapp.settings",
        SECRET_KEY=secret("secret-key.txt"),
        DATABASE_URL=f"postgres://postgres:{pg}@127.0.0.1:{stack.env['T2I_PG_PORT']}/t2i",
        REDIS_URL=f"redis://:{redis}@127.0.0.1:{stack.env['T2I_REDIS_PORT']}/0",
    )


def staff_session(stack: BenchStack, env: dict[str, str]) -> urllib.request.OpenerDirector:
    """A staff user in the stack's database, logged in through the login form: an opener with its cookies."""
    password = secrets.token_urlsafe(16)
    code = (
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user({STAFF!r}, password={password!r}, is_staff=True)"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = f"{stack.url}/accounts/login/"
    opener.open(login, timeout=30).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode({"username": STAFF, "password": password, "csrfmiddlewaretoken": csrf}).encode()
    opener.open(urllib.request.Request(login, form, headers={"Referer": login}), timeout=30).read()
    if not any(c.name == "sessionid" for c in jar):
        raise RuntimeError("could not log in to the stack as staff")
    return opener


def render(opener: urllib.request.OpenerDirector, url: str) -> tuple[int, float, int]:
    """(status, seconds for the whole answer, bytes) of one GET."""
    t0 = time.perf_counter()
    try:
        with opener.open(url, timeout=60) as answer:
            body = answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return status, time.perf_counter() - t0, len(body)


def report(label: str, samples: list[tuple[int, float, int]]) -> None:
    times = sorted(s[1] * 1000 for s in samples)
    bad = [s for s in samples if s[0] != 200]
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(
        f"{label:<24} {len(samples):4d} GETs  median {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms  "
        f"worst {times[-1]:7.1f} ms  not 200: {len(bad)}"
    )
    for status, seconds, size in bad:
        print(f"    {status} after {seconds * 1000:.0f} ms ({size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", nargs="+", required=True, type=Path)
    parser.add_argument("--prompts", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--profile", default="sdxl-a100")
    parser.add_argument("--time-factor", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60, help="loadgen's --max-seconds")
    parser.add_argument("--peak-load", type=float, default=0.8)
    parser.add_argument("--time-scale", type=float, default=6.5)
    parser.add_argument("--start", type=float, default=450)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between dashboard GETs")
    parser.add_argument("--window", nargs="+", default=["5m", "15m", "1h"], help="dashboard windows to cycle")
    args = parser.parse_args()

    stack = BenchStack(ROOT, args.workers, args.time_factor, "queue", profile=args.profile)
    out = stack.data_dir / "loadgen"
    try:
        stack.start()
        env = django_env(stack)
        opener = staff_session(stack, env)
        urls = [f"{stack.url}/dashboard/?window={w}" for w in args.window]
        idle = [render(opener, urls[i % len(urls)]) for i in range(2 * len(urls))]

        loadgen = [sys.executable, "manage.py", "loadgen", "--url", stack.url, "--token", stack.token]
        loadgen += ["--trace", *map(str, args.trace), "--prompts", str(args.prompts), "--clip-prompts"]
        loadgen += ["--peak-load", str(args.peak_load), "--time-scale", str(args.time_scale)]
        loadgen += ["--workers", str(args.workers), "--profile", args.profile, "--time-factor", str(args.time_factor)]
        loadgen += ["--start", str(args.start), "--max-seconds", str(args.seconds), "--out", str(out)]
        log_path = stack.data_dir / "loadgen.out"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(loadgen, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            loaded: list[tuple[int, float, int]] = []
            stop = threading.Event()
            i = 0
            while proc.poll() is None and not stop.wait(args.every):
                loaded.append(render(opener, urls[i % len(urls)]))
                i += 1
            proc.wait()
        text = log_path.read_text(errors="replace")
        print(
            f"stack: {args.workers} emulated workers ({args.profile}, time factor {args.time_factor}); "
            f"loadgen exit {proc.returncode}; windows {', '.join(args.window)}; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        report("dashboard, no load", idle)
        if loaded:
            report("dashboard, under loadgen", loaded)
        print("loadgen's output (last lines):")
        print("\n".join(text.strip().splitlines()[-14:]))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
