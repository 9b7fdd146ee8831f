"""Progress-reporting overhead per denoising step (issue 12).

    .venv/bin/python -m workers.bench_progress                        # tiny model, 50 steps, batch 4
    .venv/bin/python -m workers.bench_progress --steps 50 --runs 8 --batch 4 --model PATH

What it measures, against a throwaway embedded Redis (the same redis-server the stack runs):

1. **hook**: `StepReporter.__call__`, the only part that runs on the denoising thread (note the step, set
   an Event, call the next hook: here a no-op like `LeaseKeeper.stop_if_lost` when the lease is fine),
   in ns per call over 200,000 calls, while the reporter's thread is live;
2. **write**: one Redis write of a batch's step (`write_steps`: a pipeline of one SET per row), in ms;
   it runs on the reporter's thread, at most once per REPORT_INTERVAL_S per batch;
3. **end to end**: the engine's seconds per step without any hook, with the reporter as its step hook, and
   with the reporter making live previews too (as the worker runs it), runs interleaved (A, B, C, A, B, C, …)
   so machine load hits all alike; medians.
4. **latent preview**: what the live preview costs — on the denoising thread, the copy of the batch's latent to
   the CPU (`StepReporter.preview`); on the reporter's thread, the engine's linear latent → RGB approximation
   (`ApproxCEngine.latent_rgb`) and one PNG per item (`preview_pngs`) — per preview, and per step if one were
   made every `--preview-every` steps (the worker makes at most one a second, PREVIEW_INTERVAL_S).
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


def _seconds_per_step(engine, batch: int, steps: int, hook, size: int = 64, on_latent=None) -> float:
    from workers.engine import GenItem

    items = [GenItem(prompt=f"a lighthouse {i}", seed=i, width=size, height=size, steps=steps) for i in range(batch)]
    t0 = time.perf_counter()
    engine.generate(items, on_step=hook, on_latent=on_latent)
    return (time.perf_counter() - t0) / steps


def _preview_ms(engine, batch: int, latent_hw: int, repeats: int = 200) -> tuple[float, float, int]:
    """(ms on the denoising thread: the latent's copy, as StepReporter.preview does; ms on the reporter's thread:
    the engine's latent → RGB and the PNGs, as StepReporter.write_preview does; bytes per PNG)."""
    import torch

    from workers.progress import preview_pngs

    x = torch.randn(batch, 4, latent_hw, latent_hw)
    t0 = time.perf_counter()
    for _ in range(repeats):
        copy = x.to("cpu", copy=True)
    copy_ms = (time.perf_counter() - t0) * 1000 / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        pngs = preview_pngs(engine.latent_rgb(copy))
    return copy_ms, (time.perf_counter() - t0) * 1000 / repeats, len(pngs[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / ".data" / "test-cache" / "tiny-sd")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=8, help="end-to-end runs of each kind")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="image width and height (the latent is size / 8)")
    parser.add_argument("--preview-every", type=int, default=5, help="steps between two latent previews")
    parser.add_argument(
        "--preview-only",
        action="store_true",
        help="only the preview's own cost at --size (the tiny model's steps are slow at large sizes on a CPU)",
    )
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
        # No ledger here (ended=None): the cancel check runs on the reporter's thread, not the denoising one.
        with StepReporter(ids, next_hook=lambda i, n: None, ended=None) as reporter:
            hook_ns = _hook_ns(reporter, 200_000)
        write_ms = _write_ms(ids, 1000)

        engine = _engine(args.model)
        if args.preview_only:
            copy_ms, decode_ms, png_bytes = _preview_ms(engine, args.batch, args.size // 8)
            print(f"batch of {args.batch}, {args.size}x{args.size} (latent {args.size // 8}x{args.size // 8})")
            print(f"preview: latent copy         : {copy_ms:8.3f} ms per preview (denoising thread)")
            print(f"preview: RGB + {args.batch} PNGs        : {decode_ms:8.3f} ms per preview (reporter thread)")
            print(f"PNG size                     : {png_bytes:8d} B each")
            return
        _seconds_per_step(engine, args.batch, args.steps, None, args.size)  # warm-up
        plain, no_preview, reported, writes, previews = [], [], [], [], []
        for _ in range(args.runs):
            plain.append(_seconds_per_step(engine, args.batch, args.steps, None, args.size))
            with StepReporter(ids, next_hook=lambda i, n: None, ended=None) as reporter:
                no_preview.append(_seconds_per_step(engine, args.batch, args.steps, reporter, args.size))
            with StepReporter(ids, next_hook=lambda i, n: None, ended=None) as reporter:
                reporter.to_rgb = engine.latent_rgb  # as the worker runs it: live previews on
                reported.append(
                    _seconds_per_step(engine, args.batch, args.steps, reporter, args.size, reporter.preview)
                )
            writes.append(reporter.writes)
            previews.append(reporter.previews)
        step_plain, step_reported = statistics.median(plain), statistics.median(reported)
        print(f"batch of {args.batch}, {args.steps} steps, {args.size}x{args.size}, {args.model.name}, torch threads 1")
        print(f"hook on the denoising thread : {hook_ns:8.0f} ns per step")
        every = f"reporter thread, at most every {REPORT_INTERVAL_S} s"
        print(f"one Redis write of the batch : {write_ms:8.3f} ms ({every})")
        print(f"writes per run (median)      : {statistics.median(writes):8.0f} for {args.steps} steps")
        print(f"step without hook (median)   : {step_plain * 1000:8.3f} ms")
        print(f"previews per run (median)    : {statistics.median(previews):8.0f} for {args.steps} steps")
        step_no_preview = statistics.median(no_preview)
        print(f"step, reporter w/o preview   : {step_no_preview * 1000:8.3f} ms (progress, cancel hook)")
        print(f"step with reporter (median)  : {step_reported * 1000:8.3f} ms (progress, cancel hook, previews)")
        print(f"hook / step                  : {hook_ns / 1e6 / (step_plain * 1000):8.5%}")
        print(f"end-to-end difference        : {(step_reported - step_plain) / step_plain:+8.2%} (noise included)")
        preview_diff = (step_reported - step_no_preview) / step_no_preview
        print(f"previews on vs off           : {preview_diff:+8.2%} (noise included)")
        copy_ms, decode_ms, png_bytes = _preview_ms(engine, args.batch, args.size // 8)
        every, step_ms = args.preview_every, step_plain * 1000
        print(f"preview: latent copy         : {copy_ms:8.3f} ms per preview (denoising thread)")
        print(
            f"preview: RGB + {args.batch} PNGs        : {decode_ms:8.3f} ms per preview (reporter thread), "
            f"{png_bytes} B each"
        )
        print(
            f"preview every {every} steps / step : {(copy_ms + decode_ms) / every / step_ms:8.2%} "
            "if all on the denoising thread"
        )
        print(f"                               {copy_ms / every / step_ms:8.3%} with the decode on the reporter thread")
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
