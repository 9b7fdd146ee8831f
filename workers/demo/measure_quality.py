"""Measured quality of approximate caching on the demo model (issue 15, part 4).

``python -m workers.demo.measure_quality MODEL_DIR --pairs 800 --out FILE.json [--plot PNG]``

For ``--pairs`` (prompt, cached neighbour) pairs of :func:`workers.demo.prompt_stream.neighbour_pairs`
(eight relations, from an exact repeat to all four attributes changed, so the whole range of similarity is
covered) it does what the live system does, through the same :class:`workers.engine.ApproxCEngine` calls:

1. similarity s = cosine of the MiniLM embeddings (``scheduler.embeddings.embed_texts``: the embedder the
   live cache stores and looks up with, ``webapp.cache.store.embed``);
2. the neighbour is generated at K = 0 (N = 50 DDIM steps) and the engine captures its latents at the cache
   levels 5…25, exactly what the worker stores in the cache (``workers.tasks._grow_cache``);
3. the prompt is resumed from the neighbour's latent at each K′ > 0 (``GenItem(start_level=K′,
   start_latent=…)``, as ``workers.tasks._items_for`` builds it from ``cache_store.start_latent``), and also
   generated in full at K′ = 0;
4. every image is read back by the model's scorer: (a) adherence to the prompt's *own* attributes (all four,
   and each one); (b) fidelity to the prompt's own K′ = 0 image, SSIM (``workers.image_fidelity``).

The K′ = 0 image of a prompt uses the *neighbour's* seed, so an exact repeat resumes into exactly its K′ = 0
image and fidelity measures what resuming from another prompt's trajectory changes, not seed-to-seed
variation (two seeds of one prompt differ in layout jitter even when both adhere perfectly).

Quality, as the yardstick defines it (relative to a full generation): Q(bin, K′) = adherence(K′) /
adherence(K′ = 0) over the same pairs, with a paired bootstrap 95 % CI over pairs; adherence rates have
Wilson 95 % CIs. Then g(K′) of the yardstick's form Q = max(0.75, 1 − g(K′)(1 − s)) is fitted to the bins
(least squares weighted by pairs, at each bin's mean s).

The JSON it writes (format ``t2i-measured-quality/1``) is what ``scheduler.quality.load_measured`` reads
(``python -m scheduler.simulate --quality measured:FILE``); see docs/quality.md for every field.

Django-free.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from scheduler.embeddings import embed_texts
from scheduler.quality import QualityModel
from workers.demo.figures import save_figure
from workers.demo.marker import scorer_folder
from workers.demo.prompt_stream import RELATIONS, NeighbourPair, neighbour_pairs
from workers.demo.scorer import load_scorer
from workers.demo.world import ATTRIBUTE_NAMES
from workers.engine import ApproxCEngine, GenItem, load_pipeline
from workers.image_fidelity import fidelity

FORMAT = "t2i-measured-quality/1"
DEFAULT_LEVELS = (0, 5, 10, 15, 20, 25)
# Similarity bin lower edges (MiniLM cosine). The top bin holds the exact repeats (s = 1); the others were
# chosen from the spread of s over the eight relations (docs/quality.md shows it) so each holds pairs.
DEFAULT_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.999)
FLOOR = 0.75  # the yardstick's floor (scheduler.quality.QualityModel.floor)
PAIR_SEED_BASE = 30_000  # generation seeds: apart from training (0…) and the adherence captions (20 000)
ARGUS = {0: 1.0, 5: 0.9705, 10: 0.9581, 15: 0.9438, 20: 0.9324, 25: 0.9152}  # Argus's per-level quality (SDXL)


# ----------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion (sensible at 0 % and 100 %, unlike the normal one)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_ratio_ci(
    hits: np.ndarray, rng: np.random.Generator, reps: int = 2000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q = mean(hits[:, j]) / mean(hits[:, 0]) for each level j, with a paired percentile bootstrap 95 % CI
    (pairs resampled together across levels). ``hits``: (pairs, levels) of 0/1."""
    n = hits.shape[0]
    base = hits[:, 0].mean()
    q = hits.mean(0) / base if base > 0 else np.full(hits.shape[1], np.nan)
    idx = rng.integers(0, n, size=(reps, n))
    means = hits[idx].mean(1)  # (reps, levels)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = means / means[:, :1]
    ratios = ratios[np.isfinite(ratios[:, 0])]
    lo, hi = np.percentile(ratios, [2.5, 97.5], axis=0) if len(ratios) else (q * np.nan, q * np.nan)
    return q, lo, hi


def mean_ci(values: np.ndarray, rng: np.random.Generator, reps: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and percentile bootstrap 95 % CI bounds, stacked as (2, columns)."""
    idx = rng.integers(0, values.shape[0], size=(reps, values.shape[0]))
    means = values[idx].mean(1)
    return values.mean(0), np.percentile(means, [2.5, 97.5], axis=0)


def yardstick(s: float, g: float, floor: float = FLOOR) -> float:
    return max(floor, 1.0 - g * (1.0 - s))


def fit_g(s_mean: list[float], q: list[float | None], weights: list[int], floor: float = FLOOR) -> tuple[float, float]:
    """The g ≥ 0 that minimises Σ w (Q − max(floor, 1 − g(1 − s)))² over the bins; (g, weighted RMSE).
    A one-dimensional, piecewise-smooth problem: a fine grid then a local refinement is exact enough."""
    s, w = np.asarray(s_mean, dtype=float), np.asarray(weights, dtype=float)
    qv = np.array([np.nan if x is None else x for x in q], dtype=float)  # None: undefined in that bin
    keep = np.isfinite(qv) & (w > 0)
    if not keep.any():
        return float("nan"), float("nan")
    s, qv, w = s[keep], qv[keep], w[keep]

    def loss(g: float) -> float:
        return float(np.sum(w * (qv - np.maximum(floor, 1.0 - g * (1.0 - s))) ** 2) / w.sum())

    grid = np.concatenate([np.linspace(0, 5, 5001), np.linspace(5, 100, 951)])
    losses = [loss(g) for g in grid]
    best = float(grid[int(np.argmin(losses))])
    step = 0.001 if best <= 5 else 0.1
    fine = np.linspace(max(0.0, best - step), best + step, 201)
    best = float(fine[int(np.argmin([loss(g) for g in fine]))])
    return best, math.sqrt(loss(best))


# ----------------------------------------------------------------------------------------------------------
# Generation and scoring
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Scored:
    """Per pair and level: which attributes the scorer read right, and SSIM to the K′ = 0 image."""

    right: np.ndarray  # (pairs, levels, 4) bool, ATTRIBUTE_NAMES order
    ssim: np.ndarray  # (pairs, levels) float; 1 at K′ = 0


def similarities(pairs: list[NeighbourPair]) -> np.ndarray:
    """Cosine similarity of each prompt to its neighbour with the live cache's embedder (MiniLM)."""
    texts = list(dict.fromkeys([p.prompt for p in pairs] + [p.neighbour for p in pairs]))
    vectors = dict(zip(texts, embed_texts(texts)))
    s = np.array([float(np.dot(vectors[p.prompt], vectors[p.neighbour])) for p in pairs])
    return np.clip(s, -1.0, 1.0)  # float32 rounding puts an exact repeat at 1 + 1e-7: it belongs in the top bin


def generate_and_score(
    model_dir: str | Path,
    pairs: list[NeighbourPair],
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    steps: int = 50,
    guidance: float = 7.5,
    chunk: int = 32,
    progress: bool = True,
) -> Scored:
    """Run every pair through the engine (neighbour at K = 0 with its levels captured, the prompt at K′ = 0
    and resumed at each K′ > 0) and score each image. ``chunk`` pairs per pair of engine calls: the second
    call mixes every K′ in one batch (the engine's late join), as a worker's batch would."""
    if levels[0] != 0 or list(levels) != sorted(set(levels)):
        raise ValueError(f"levels must be ascending and start at 0, got {levels}")
    pipe = load_pipeline(model_dir, device="cpu")
    judge = load_scorer(scorer_folder(model_dir))
    engine = ApproxCEngine(pipe, cache_levels=tuple(k for k in levels if k > 0))
    resumed = [k for k in levels if k > 0]
    right = np.zeros((len(pairs), len(levels), len(ATTRIBUTE_NAMES)), dtype=bool)
    ssim = np.ones((len(pairs), len(levels)))
    with tqdm(total=len(pairs), unit="pair", desc="measuring", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(pairs), chunk):
            part = pairs[start : start + chunk]
            seeds = [PAIR_SEED_BASE + start + i for i in range(len(part))]
            full = [
                GenItem(prompt=p.neighbour, seed=s, steps=steps, guidance_scale=guidance) for p, s in zip(part, seeds)
            ]
            full += [
                GenItem(prompt=p.prompt, seed=s, steps=steps, guidance_scale=guidance) for p, s in zip(part, seeds)
            ]
            first = engine.generate(full)
            neighbours, own = first[: len(part)], first[len(part) :]
            items = [
                GenItem(prompt=p.prompt, steps=steps, guidance_scale=guidance, start_level=k, start_latent=n.latents[k])
                for p, n in zip(part, neighbours)
                for k in resumed
            ]
            second = engine.generate(items)
            images = [
                [own[i].image] + [r.image for r in second[i * len(resumed) : (i + 1) * len(resumed)]]
                for i in range(len(part))
            ]
            flat = [im for row in images for im in row]
            read = judge.predict_indices(flat).reshape(len(part), len(levels), len(ATTRIBUTE_NAMES))
            want = np.array([p.attributes.indices() for p in part])[:, None, :]
            right[start : start + len(part)] = read == want
            for i, row in enumerate(images):
                for j in range(1, len(levels)):
                    ssim[start + i, j] = fidelity(row[j], row[0]).ssim
            bar.update(len(part))
    return Scored(right, ssim)


# ----------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------


def _r(x: float) -> float | None:
    """Rounded for the JSON file; None where undefined (e.g. Q of a bin where nothing adhered at K′ = 0)."""
    return round(float(x), 4) if math.isfinite(float(x)) else None


def _rows(right: np.ndarray, ssim: np.ndarray, rng: np.random.Generator, reps: int) -> dict:
    """Every statistic of one group of pairs (a similarity bin, a relation, or all of them)."""
    n = right.shape[0]
    hits = right.all(2).astype(float)
    q, q_lo, q_hi = bootstrap_ratio_ci(hits, rng, reps)
    fid, fid_ci = mean_ci(ssim, rng, reps)
    counts = hits.sum(0).astype(int)
    return {
        "pairs": n,
        "q": [_r(x) for x in q],
        "q_ci": [[_r(a), _r(b)] for a, b in zip(q_lo, q_hi)],
        "adherence": [round(float(c / n), 4) for c in counts],
        "adherence_ci": [[_r(x) for x in wilson(int(c), n)] for c in counts],
        "attributes": {
            name: [round(float(x), 4) for x in right[:, :, a].mean(0)] for a, name in enumerate(ATTRIBUTE_NAMES)
        },
        "fidelity_ssim": [round(float(x), 4) for x in fid],
        "fidelity_ci": [[round(float(a), 4), round(float(b), 4)] for a, b in zip(fid_ci[0], fid_ci[1])],
    }


def build_table(
    pairs: list[NeighbourPair],
    s: np.ndarray,
    scored: Scored,
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    edges: tuple[float, ...] = DEFAULT_EDGES,
    seed: int = 0,
    reps: int = 2000,
) -> dict:
    """Q_measured per similarity bin and level (empty bins dropped: the row below then covers their range),
    the same by relation and overall, and the fitted g(K′)."""
    rng = np.random.default_rng(seed)
    bins = []
    bounds = list(edges) + [1.0 + 1e-9]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        mask = (s >= lo) & (s < hi) if lo > edges[0] else s < hi  # the first bin also takes s below its edge
        if not mask.any():
            continue
        row = {"lo": lo, "hi": min(hi, 1.0), "s_mean": round(float(s[mask].mean()), 4)}
        row.update(_rows(scored.right[mask], scored.ssim[mask], rng, reps))
        bins.append(row)
    relations = {}
    kinds = np.array([p.relation for p in pairs])
    for rel in RELATIONS:
        mask = kinds == rel
        if mask.any():
            relations[rel] = {
                "s_mean": round(float(s[mask].mean()), 4),
                "s_min": round(float(s[mask].min()), 4),
                "s_max": round(float(s[mask].max()), 4),
            } | _rows(scored.right[mask], scored.ssim[mask], rng, reps)
    g, rmse = {}, {}
    for j, k in enumerate(levels):
        if k == 0:
            continue
        fitted, error = fit_g([b["s_mean"] for b in bins], [b["q"][j] for b in bins], [b["pairs"] for b in bins])
        g[str(k)], rmse[str(k)] = _r(fitted), _r(error)
    overall = {"s_mean": round(float(s.mean()), 4)} | _rows(scored.right, scored.ssim, rng, reps)
    # Every pair's raw outcome, so the table can be re-binned or re-analysed without generating again.
    weights = 1 << np.arange(len(ATTRIBUTE_NAMES))
    raw = {
        "s": [round(float(x), 5) for x in s],
        "relation": [p.relation for p in pairs],
        "attributes_right": (scored.right.astype(int) @ weights).tolist(),  # bit i: ATTRIBUTE_NAMES[i] read right
        "ssim": np.round(scored.ssim, 4).tolist(),
    }
    return {
        "levels": list(levels),
        "bins": bins,
        "overall": overall,
        "relations": relations,
        "fit": {"form": "Q = max(floor, 1 - g(K') (1 - s))", "floor": FLOOR, "g": g, "rmse": rmse},
        "per_pair": raw,
    }


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------


def format_table(doc: dict) -> str:
    """The Q table (with CIs), adherence and SSIM per bin, and the fit, as printed text."""
    levels = doc["levels"]
    head = "s bin          pairs  s mean | " + "  ".join(f"K'={k:<2d}             " for k in levels)
    lines = [f"Q_measured = adherence(K') / adherence(0), bootstrap 95 % CI ({doc['pairs']} pairs)", head]
    for b in doc["bins"]:
        cells = "  ".join(f"{_num(q):>5s} [{_num(lo):>5s},{_num(hi):>5s}]" for q, (lo, hi) in zip(b["q"], b["q_ci"]))
        lines.append(f"[{b['lo']:.3f},{b['hi']:.3f})  {b['pairs']:5d}  {b['s_mean']:6.3f} | {cells}")
    lines.append("adherence (all four right) | SSIM to the K'=0 image, per bin")
    for b in doc["bins"] + [dict(doc["overall"], lo=0.0, hi=1.0)]:
        a = " ".join(f"{x:5.3f}" for x in b["adherence"])
        f = " ".join(f"{x:5.3f}" for x in b["fidelity_ssim"])
        lines.append(f"[{b['lo']:.3f},{b['hi']:.3f})  {b['pairs']:5d} | {a} | {f}")
    lines.append(
        "per attribute, all pairs: "
        + "; ".join(f"{name} " + " ".join(f"{x:5.3f}" for x in v) for name, v in doc["overall"]["attributes"].items())
    )
    lines.append("by relation: s mean [min, max] | adherence at each K'")
    for rel, r in doc["relations"].items():
        a = " ".join(f"{x:5.3f}" for x in r["adherence"])
        lines.append(f"  {rel:22s} {r['pairs']:4d}  {r['s_mean']:5.3f} [{r['s_min']:5.3f}, {r['s_max']:5.3f}] | {a}")
    fit = doc["fit"]
    lines.append(
        "fitted g(K'): " + "  ".join(f"g({k})={_num(v)} (rmse {_num(fit['rmse'][k])})" for k, v in fit["g"].items())
    )
    if "per_pair" in doc:
        lines += comparison_lines(doc)
    return "\n".join(lines)


def comparison_lines(doc: dict) -> list[str]:
    """Measured Q over all pairs against the default yardstick and the fitted g(K′) evaluated at each pair's
    own s and averaged over the same pairs, and against Argus's per-level numbers."""
    levels, o = doc["levels"], doc["overall"]
    s = np.array(doc["per_pair"]["s"])
    default = QualityModel()
    rows = [
        ("measured Q, all pairs", o["q"]),
        ("  95 % CI low", [c[0] for c in o["q_ci"]]),
        ("  95 % CI high", [c[1] for c in o["q_ci"]]),
        ("default yardstick, same s", [float(np.mean([default.q(x, k) for x in s])) for k in levels]),
    ]
    if all(v is not None for v in doc["fit"]["g"].values()):
        fitted = QualityModel(g={0: 0.0, **{int(k): v for k, v in doc["fit"]["g"].items()}})
        rows.append(("fitted g(K'), same s", [float(np.mean([fitted.q(x, k) for x in s])) for k in levels]))
    rows.append(("Argus (SDXL), per level", [ARGUS.get(k) for k in levels]))
    rows.append(("SSIM to own K'=0 image", o["fidelity_ssim"]))
    out = ["all pairs, at each K': " + " ".join(f"{k:>6d}" for k in levels)]
    out += [f"  {name:26s}" + " ".join(f"{_num(x):>6s}" for x in values) for name, values in rows]
    return out


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _with_errors(row: dict) -> tuple[np.ndarray, np.ndarray]:
    """Q and its CI as matplotlib error bars (NaN where undefined)."""
    q = np.array(row["q"], dtype=float)
    ci = np.array(row["q_ci"], dtype=float)
    return q, np.abs(np.stack([q - ci[:, 0], ci[:, 1] - q]))


def plot(doc: dict, out: str | Path) -> Path:
    """Measured Q per similarity bin against the default yardstick at the bin's mean s, and the overall
    measured Q against Argus's per-level numbers and the yardstick averaged over the same pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = QualityModel()
    levels = doc["levels"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110)
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(doc["bins"])))
    for b, colour in zip(doc["bins"], colours):
        q, err = _with_errors(b)
        label = f"s∈[{b['lo']:.3g}, {b['hi']:.3g}{']' if b['hi'] >= 1 else ')'}  n={b['pairs']}"
        left.errorbar(levels, q, yerr=err, color=colour, marker="o", ms=3, capsize=2, label=label)
        left.plot(levels, [default.q(b["s_mean"], k) for k in levels], color=colour, ls="--", lw=1)
    left.set_title("measured Q (solid, 95 % CI) vs default yardstick at the bin's mean s (dashed)", fontsize=9)
    left.set_xlabel("K′ (resumed from the neighbour's latent, of 50 steps)")
    left.set_ylabel("Q = adherence(K′) / adherence(0)")
    left.legend(fontsize=7, loc="lower left")
    o = doc["overall"]
    q, err = _with_errors(o)
    right.errorbar(levels, q, yerr=err, color="k", marker="o", capsize=3, label=f"measured, all {o['pairs']} pairs")
    right.plot(levels, [ARGUS[k] for k in levels], color="tab:red", marker="s", label="Argus (SDXL), per level")
    # The default yardstick averaged over the bins' pairs (each bin at its mean s).
    total = sum(b["pairs"] for b in doc["bins"])
    ys = [sum(b["pairs"] * default.q(b["s_mean"], k) for b in doc["bins"]) / total for k in levels]
    right.plot(levels, ys, color="tab:blue", ls="--", marker="^", label="default yardstick, same pairs")
    if all(v is not None for v in doc["fit"]["g"].values()):
        fitted = QualityModel(g={0: 0.0, **{int(k): v for k, v in doc["fit"]["g"].items()}})
        yf = [sum(b["pairs"] * fitted.q(b["s_mean"], k) for b in doc["bins"]) / total for k in levels]
        right.plot(levels, yf, color="tab:green", ls=":", marker="v", label="fitted g(K′), same pairs")
    right.plot(levels, o["fidelity_ssim"], color="tab:gray", marker=".", label="SSIM to own K′=0 image")
    right.set_title("all pairs: measured vs Argus vs yardstick (and fidelity)", fontsize=9)
    right.set_xlabel("K′")
    right.legend(fontsize=7, loc="lower left")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.set_xticks(levels)
    return save_figure(fig, out)


def measure(
    model_dir: str | Path,
    n_pairs: int,
    seed: int = 0,
    levels: tuple[int, ...] = DEFAULT_LEVELS,
    edges: tuple[float, ...] = DEFAULT_EDGES,
    steps: int = 50,
    guidance: float = 7.5,
    chunk: int = 32,
    progress: bool = True,
) -> dict:
    """The whole measurement: pairs, similarities, generation, scoring, table and fit, as the JSON document."""
    started, cpu = time.perf_counter(), time.process_time()
    pairs = neighbour_pairs(n_pairs, seed)
    s = similarities(pairs)
    scored = generate_and_score(model_dir, pairs, levels, steps, guidance, chunk, progress)
    doc = {
        "format": FORMAT,
        "model": str(Path(model_dir).resolve()),
        "pairs": n_pairs,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "embedder": "MiniLM all-MiniLM-L6-v2 (scheduler.embeddings.embed_texts), cosine",
        "fidelity": "SSIM (workers.image_fidelity) of the image at K' to the prompt's own K'=0 image, same seed",
        "edges": list(edges),
    }
    doc.update(build_table(pairs, s, scored, levels, edges, seed))
    doc["wall_s"] = round(time.perf_counter() - started, 1)
    doc["cpu_s"] = round(time.process_time() - cpu, 1)
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m workers.demo.measure_quality",
        description="Measure Q(s, K') of approximate caching on a demo model folder (issue 15, part 4).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model_dir", nargs="?", help="a demo model folder (with scorer/), e.g. workers/demo/pretrained")
    p.add_argument("--pairs", type=int, default=800, help="(prompt, neighbour) pairs, spread over 8 relations")
    p.add_argument("--out", required=True, help="the JSON table to write")
    p.add_argument("--plot", default=None, help="also write the figure here (PNG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", default=",".join(map(str, DEFAULT_LEVELS)), help="K' levels, starting at 0")
    p.add_argument("--edges", default=",".join(map(str, DEFAULT_EDGES)), help="similarity bin lower edges")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=7.5, help="the serving default")
    p.add_argument("--chunk", type=int, default=32, help="pairs per engine call pair")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--replot", action="store_true", help="measure nothing: print and plot the table in --out")
    args = p.parse_args(argv)
    if args.replot:
        doc = json.loads(Path(args.out).read_text())
        print(format_table(doc))
        if args.plot:
            print(f"wrote {plot(doc, args.plot)}")
        return 0
    try:
        levels = tuple(int(x) for x in args.levels.split(","))
        edges = tuple(float(x) for x in args.edges.split(","))
    except ValueError as exc:
        p.error(str(exc))
    if args.pairs < 1 or list(edges) != sorted(edges):
        p.error("--pairs must be ≥ 1 and --edges ascending")
    if not args.model_dir or not (Path(args.model_dir) / "scorer").is_dir():
        p.error(f"{args.model_dir} has no scorer/: not a demo model folder")
    torch.set_num_threads(args.threads)
    doc = measure(
        args.model_dir,
        args.pairs,
        args.seed,
        levels,
        edges,
        args.steps,
        args.guidance,
        args.chunk,
        not args.no_progress,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    print(format_table(doc))
    print(f"{doc['pairs']} pairs in {doc['wall_s']:.0f} s wall, {doc['cpu_s']:.0f} s CPU; wrote {args.out}")
    if args.plot:
        print(f"wrote {plot(doc, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
