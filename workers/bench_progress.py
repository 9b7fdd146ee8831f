"""Progress-reporting overhead per denoising step (issue 12).

    .venv/bin/python -m workers.bench_progress                        # tiny model, 50 steps, batch 4
    .venv/bin/python -m workers.bench_progress --steps 50 --runs 8 --batch 4 --model PATH

What it measures, against a throwaway embedded Redis (the same redis-server the stack runs):

1. **hook**: `StepReporter.__call__`, the only part that runs on the denoising thread (note the step, set
   an Event, call the next hook: here a no-op like `LeaseKeeper.stop_if_lost` when the lease is fine),
   in ns per call over 200,000 calls, while the reporter's thread is live;
2. **write**: one Redis write of a batch's step (`write_steps`: a pipeline of one SET per row), in ms;
   it runs on the reporter's thread, at most once per REPORT_INTERVAL_S per batch;
3. **end to end**: the engine's seconds per step with the reporter as its step hook and without any hook,
   runs interleaved (A, B, A, B, …) so machine load hits both alike; medians.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _hook_ns(reporter, calls: int) -> float:
    t0 = time.perf_counter_ns()
    for i in range(calls):
        reporter(i, calls)
    return (time.perf_counter_ns() - t0) / calls


def _write_ms(request_ids: list, writes: int) -> float:
    from webapp.ledger.progress import write_steps

    t0 = time.perf_counter()
    for i in range(writes):
        write_steps(request_ids, i, writes)
    return (time.perf_counter() - t0) * 1000 / writes


def _engine(model: Path):
    import torch

    from workers.engine import ApproxCEngine, load_pipeline
    from workers.tiny_model import build_tiny_pipeline

    torch.set_num_threads(1)  # a shared 2-core machine: one worker's share
    if not (model / "model_index.json").exists():
        build_tiny_pipeline(model)
    return ApproxCEngine(load_pipeline(model, device="cpu"))


def _seconds_per_step(engine, batch: int, steps: int, hook) -> float:
    from workers.engine import GenItem

    items = [GenItem(prompt=f"a lighthouse {i}", seed=i, width=64, height=64, steps=steps) for i in range(batch)]
    t0 = time.perf_counter()
    engine.generate(items, on_step=hook)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / ".data" / "test-cache" / "tiny-sd")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=8, help="end-to-end runs of each kind")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()

    from webapp.stack.services import Redis, free_port

    run_dir = Path(tempfile.mkdtemp(prefix="t2i-bench-progress-"))
    redis = Redis(run_dir / "redis", free_port(), persist=False)
    redis.start()
    try:
        os.environ.update(
            REDIS_URL=redis.url, T2I_DATA_DIR=str(run_dir / "data"), DJANGO_SETTINGS_MODULE="webapp.settings"
        )
        os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # a throwaway process; nothing is signed
        import django

        django.setup()
        from workers.progress import REPORT_INTERVAL_S, StepReporter

        ids = [uuid.uuid4() for _ in range(args.batch)]
        with StepReporter(ids, next_hook=lambda i, n: None) as reporter:
            hook_ns = _hook_ns(reporter, 200_000)
        write_ms = _write_ms(ids, 1000)

        engine = _engine(args.model)
        _seconds_per_step(engine, args.batch, args.steps, None)  # warm-up
        plain, reported, writes = [], [], []
        for _ in range(args.runs):
            plain.append(_seconds_per_step(engine, args.batch, args.steps, None))
            with StepReporter(ids, next_hook=lambda i, n: None) as reporter:
                reported.append(_seconds_per_step(engine, args.batch, args.steps, reporter))
            writes.append(reporter.writes)
        step_plain, step_reported = statistics.median(plain), statistics.median(reported)
        print(f"batch of {args.batch}, {args.steps} steps, {args.model.name}, torch threads 1")
        print(f"hook on the denoising thread : {hook_ns:8.0f} ns per step")
        every = f"reporter thread, at most every {REPORT_INTERVAL_S} s"
        print(f"one Redis write of the batch : {write_ms:8.3f} ms ({every})")
        print(f"writes per run (median)      : {statistics.median(writes):8.0f} for {args.steps} steps")
        print(f"step without hook (median)   : {step_plain * 1000:8.3f} ms")
        print(f"step with reporter (median)  : {step_reported * 1000:8.3f} ms")
        print(f"hook / step                  : {hook_ns / 1e6 / (step_plain * 1000):8.5%}")
        print(f"end-to-end difference        : {(step_reported - step_plain) / step_plain:+8.2%} (noise included)")
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
