"""`manage.py profile_engine`: measure this machine's L(K′, b) and quality table Q(s, K′).

Writes two files next to each other (default `T2I_MEASURED_PROFILE`, i.e. `.data/profiles/`):

- `engine.csv` — columns `k,batch_size,latency_ms` (best of `--repeats` runs per cell): the level CSV
  `scheduler.profiles.load_profile` reads. The live scheduler uses it when `T2I_PROFILE` is unset.
- `quality.json` — `{"edges": [...], "levels": [...], "values": [[...]], "counts": [[...]],
  "metric": "ssim"}`: row i is the mean SSIM of ApproxC images against the full generation of the
  same prompt and seed, for requests whose nearest warmed prompt has similarity in
  [edges[i], edges[i+1]); load it with `scheduler.quality.QualityModel.from_table`. It is a
  measurement for the operator; the yardstick every policy is judged by stays the documented
  default (issue 3), never swapped in silently.

Latency runs use the configured model (`T2I_MODEL_PATH`) through the same engine the workers use.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from scheduler.embeddings import embed_texts, read_prompts
from webapp.ledger.models import ServingConfig
from workers import runtime
from workers.engine import GenItem
from workers.image_fidelity import fidelity

DEFAULT_PROMPTS = settings.BASE_DIR.parent / "shared" / "data" / "prompts" / "diffusiondb_2m_first_4k.txt"
BUCKET_EDGES = (0.0, 0.65, 0.75, 0.85, 0.90, 0.95)  # NIRVANA's thresholds as bucket edges


class Command(BaseCommand):
    help = "Measure latency L(K', b) and the quality table Q(similarity, K') of the configured model."

    def add_arguments(self, parser):
        parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
        parser.add_argument("--out-dir", type=Path, default=Path(settings.T2I_MEASURED_PROFILE).parent)
        parser.add_argument("--batch-sizes", default="1,2,4,8")
        parser.add_argument("--repeats", type=int, default=3, help="latency: best of this many runs")
        parser.add_argument("--steps", type=int, default=None, help="N (default: serving default)")
        parser.add_argument("--warm", type=int, default=200, help="quality: prompts from the front cached")
        parser.add_argument("--measure", type=int, default=40, help="quality: later prompts measured")
        parser.add_argument("--skip-quality", action="store_true")

    def handle(self, *args, **o):
        if settings.T2I_ENGINE != "diffusers":
            raise CommandError("profile_engine measures a real engine; unset T2I_ENGINE=emulated.")
        steps = o["steps"] or ServingConfig.current().default_steps
        levels = [0] + [k for k in settings.T2I_CACHE_LEVELS if k < steps]
        sizes = [int(b) for b in o["batch_sizes"].split(",")]
        engine = runtime.engine()
        o["out_dir"].mkdir(parents=True, exist_ok=True)
        csv_path = o["out_dir"] / "engine.csv"
        rows = self._latency(engine, levels, sizes, steps, o["repeats"])
        csv_path.write_text(
            "k,batch_size,latency_ms\n" + "".join(f"{k},{b},{ms:.2f}\n" for (k, b), ms in sorted(rows.items()))
        )
        self.stdout.write(self._latency_table(rows, levels, sizes))
        self.stdout.write(f"wrote {csv_path}")
        if o["skip_quality"]:
            return
        if not o["prompts"].is_file():
            raise CommandError(f"No prompt file at {o['prompts']} (--prompts FILE, or --skip-quality).")
        table = self._quality(engine, o["prompts"], o["warm"], o["measure"], levels, steps)
        json_path = o["out_dir"] / "quality.json"
        json_path.write_text(json.dumps(table, indent=1) + "\n")
        self.stdout.write(self._quality_table(table))
        self.stdout.write(f"wrote {json_path}")

    # -- latency ---------------------------------------------------------------------------------------

    def _latency(self, engine, levels, sizes, steps, repeats) -> dict[tuple[int, int], float]:
        base = engine.generate([GenItem(prompt="profile", seed=0, steps=steps)])[0]  # warms up too
        rows: dict[tuple[int, int], float] = {}
        bar = tqdm(total=len(levels) * len(sizes) * repeats, desc="latency", unit="run")
        for k in levels:
            start = base.latents.get(k) if k else None
            for b in sizes:
                items = [
                    GenItem(prompt=f"profile {i}", seed=i, steps=steps, start_level=k, start_latent=start)
                    for i in range(b)
                ]
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    engine.generate(items)
                    best = min(best, time.perf_counter() - t0)
                    bar.update()
                rows[(k, b)] = best * 1000
        bar.close()
        return rows

    @staticmethod
    def _latency_table(rows, levels, sizes) -> str:
        head = "K'  " + "".join(f"{'b=' + str(b):>10}" for b in sizes) + "   L(K',1)/L(0,1)"
        lines = [head]
        for k in levels:
            cells = "".join(f"{rows[(k, b)]:>8.0f}ms" for b in sizes)
            lines.append(f"{k:>2}  {cells}   {rows[(k, sizes[0])] / rows[(0, sizes[0])]:.2f}")
        return "\n".join(lines)

    # -- quality ---------------------------------------------------------------------------------------

    def _quality(self, engine, path, n_warm, n_measure, levels, steps) -> dict:
        prompts = read_prompts(path)
        warm, measured = prompts[:n_warm], prompts[n_warm : n_warm + n_measure]
        if not warm or not measured:
            raise CommandError(f"{path} has too few prompts for --warm {n_warm} --measure {n_measure}.")
        emb_warm, emb_new = embed_texts(warm), embed_texts(measured)
        nearest = (emb_new @ emb_warm.T).argmax(axis=1)
        similarity = (emb_new * emb_warm[nearest]).sum(axis=1)
        wanted = sorted({int(i) for i in nearest})
        cached: dict[int, dict] = {}
        for i in tqdm(wanted, desc="warm", unit="prompt"):  # only the neighbours actually used
            cached[i] = engine.generate([GenItem(prompt=warm[i], seed=i, steps=steps)])[0].latents
        sums = np.zeros((len(BUCKET_EDGES), len(levels)))
        counts = np.zeros_like(sums)
        for j, prompt in enumerate(tqdm(measured, desc="quality", unit="prompt")):
            seed = 10_000 + j
            full = engine.generate([GenItem(prompt=prompt, seed=seed, steps=steps)])[0].image
            bucket = int(np.searchsorted(BUCKET_EDGES, similarity[j], side="right") - 1)
            for col, k in enumerate(levels):
                if k == 0:
                    score = 1.0
                else:
                    item = GenItem(
                        prompt=prompt, seed=seed, steps=steps, start_level=k, start_latent=cached[int(nearest[j])][k]
                    )
                    score = fidelity(engine.generate([item])[0].image, full).ssim
                sums[max(bucket, 0), col] += score
                counts[max(bucket, 0), col] += 1
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return {
            "metric": "ssim",
            "edges": list(BUCKET_EDGES),
            "levels": levels,
            "values": [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in means],
            "counts": counts.astype(int).tolist(),
            "warm": len(warm),
            "measured": len(measured),
        }

    @staticmethod
    def _quality_table(table) -> str:
        lines = ["similarity    " + "".join(f"{'K=' + str(k):>8}" for k in table["levels"]) + "   n"]
        edges = table["edges"] + [1.0]
        for i, row in enumerate(table["values"]):
            cells = "".join(f"{'–':>8}" if v is None else f"{v:>8.3f}" for v in row)
            lines.append(f"[{edges[i]:.2f}, {edges[i + 1]:.2f})  {cells}   {table['counts'][i][0]}")
        return "\n".join(lines)
