"""Resume-speedup benchmark: latency at each start level K′ relative to K′ = 0.

    python -m workers.bench_resume [--steps 50] [--batch 1 4] [--repeats 7] [--model DIR]

Without ``--model`` it builds the tiny random SD pipeline in a temporary folder. For each batch size it
times ``ApproxCEngine.generate`` for a batch of distinct prompts at every K′, interleaving the cells
(round-robin over repeats) so that drift in machine load hits every K′ alike, and prints the time
(best of the repeats) at K′ divided by that at K′ = 0, for the whole call and for its denoising loop alone,
next to the ideal (N − K′)/N. All ratios come from one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from workers.engine import DEFAULT_CACHE_LEVELS, ApproxCEngine, GenItem, load_pipeline
from workers.tiny_model import build_tiny_pipeline

PROMPTS = [
    "a watercolor painting of a lighthouse at dawn",
    "an oil painting of a red fox in the snow",
    "a photo of a cat wearing sunglasses",
    "a futuristic city skyline at night, neon lights",
    "a bowl of ramen, studio lighting",
    "a medieval castle on a hill, misty morning",
    "a portrait of an astronaut, 35mm film",
    "a field of sunflowers under a stormy sky",
]


def measure(
    engine: ApproxCEngine, steps: int, batches: list[int], levels: list[int], repeats: int
) -> dict[tuple[int, int], list[tuple[float, float]]]:
    """(seconds per ``generate`` call, seconds in its denoising loop) for each (batch size, K′)."""
    # The donor run supplies the cached latents every resumed request starts from.
    donor = engine.generate([GenItem("a lighthouse by the sea", seed=0, steps=steps)])[0]

    def items(batch: int, k: int) -> list[GenItem]:
        return [
            GenItem(
                PROMPTS[i % len(PROMPTS)],
                seed=i,
                steps=steps,
                start_level=k,
                start_latent=donor.latents[k] if k else None,
            )
            for i in range(batch)
        ]

    for batch in batches:  # warm-up: first calls pay for kernel selection and allocation
        engine.generate(items(batch, 0))
    times: dict[tuple[int, int], list[tuple[float, float]]] = {(b, k): [] for b in batches for k in levels}
    for _ in range(repeats):
        for batch in batches:
            for k in levels:
                t0 = time.perf_counter()
                result = engine.generate(items(batch, k))[0]
                times[(batch, k)].append((time.perf_counter() - t0, result.timings.denoise_s))
    return times


def report(
    times: dict[tuple[int, int], list[tuple[float, float]]], steps: int, batches: list[int], levels: list[int]
) -> str:
    """Best of the repeats (the least disturbed by other load on a shared machine) per cell."""
    total = {key: min(t for t, _ in v) for key, v in times.items()}
    loop = {key: min(d for _, d in v) for key, v in times.items()}
    head = f"{'K′':>3} {'(N−K′)/N':>9}"
    for b in batches:
        head += f" | {f'b={b} call (s)':>14} {'t(K′)/t(0)':>10} {'loop ratio':>10}"
    lines = [head, "-" * len(head)]
    for k in levels:
        row = f"{k:>3} {(steps - k) / steps:>9.2f}"
        for b in batches:
            row += (
                f" | {total[(b, k)]:>14.4f} {total[(b, k)] / total[(b, 0)]:>10.2f} {loop[(b, k)] / loop[(b, 0)]:>10.2f}"
            )
        lines.append(row)
    spread = max(statistics.median(t for t, _ in v) / total[key] for key, v in times.items())
    lines.append(
        f"call = whole generate(); loop = its denoising loop only (no text encoding, no VAE decode); "
        f"best of repeats; worst median/best {spread:.2f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--levels", type=int, nargs="+", default=[0, *DEFAULT_CACHE_LEVELS])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", type=Path, help="local diffusers folder (default: build the tiny SD model)")
    parser.add_argument("--scheduler", choices=["ddim", "euler"], default="ddim")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    levels = sorted({0, *args.levels})
    if levels[-1] >= args.steps:
        parser.error("every level must be below --steps")

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_tiny_pipeline(Path(tmp) / "tiny-sd", "sd", args.scheduler)
        pipe = load_pipeline(model, device=args.device, scheduler=args.scheduler)
        engine = ApproxCEngine(pipe, cache_levels=tuple(k for k in levels if k > 0))
        times = measure(engine, args.steps, args.batch, levels, args.repeats)
    print(
        f"model: {'tiny random SD (64x64)' if args.model is None else args.model}; "
        f"scheduler {args.scheduler}; N = {args.steps}; device {engine.device}, {engine.dtype}; "
        f"torch threads {torch.get_num_threads()}; {args.repeats} interleaved repeats"
    )
    print(report(times, args.steps, args.batch, levels))


if __name__ == "__main__":
    main()
