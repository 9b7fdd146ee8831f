"""Fill the approximate cache with full (K = 0) generations of the configured model.

    python manage.py warm_cache --prompts ../shared/data/prompts/diffusiondb_2m_first_4k.txt --limit 500

Prompt files: one prompt per line (.txt), or a .tsv/.csv with a "prompt" column (PartiPrompts, COCO).
Blank and repeated prompts are skipped, and so are prompts already warmed under the same model key. Entries
made here belong to the tenant ``public`` with no creator: every cache scope but ``off`` may reuse them.
Each batch is one ``ApproxCEngine.generate`` call; its captured latents go to ``cache_store.insert_many``
(which evicts down to the byte budget as it goes).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from scheduler.embeddings import read_prompts
from webapp.cache import store as cache_store
from webapp.cache.keys import model_key_for
from webapp.cache.models import CacheEntry
from webapp.cache.tenants import PUBLIC_TENANT
from webapp.ledger.models import ServingConfig
from workers import runtime
from workers.engine import GenItem


def read_prompt_file(path: Path) -> list[str]:
    """Prompts in file order, stripped, blank and repeated ones dropped."""
    if path.suffix.lower() in (".tsv", ".csv"):
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            column = next((c for c in (reader.fieldnames or []) if c.strip().lower() == "prompt"), None)
            if column is None:
                raise CommandError(f"{path} has no 'prompt' column (columns: {reader.fieldnames})")
            raw = [row[column] or "" for row in reader]
    else:
        raw = read_prompts(path)
    return list(dict.fromkeys(p.strip() for p in raw if p and p.strip()))


class Command(BaseCommand):
    help = "Fill the approximate cache with full (K = 0) generations of the configured model."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--prompts",
            required=True,
            type=Path,
            help="Prompt file: one per line, or .tsv/.csv with a 'prompt' column.",
        )
        parser.add_argument("--limit", type=int, default=500, help="Most prompts to generate (default 500).")
        parser.add_argument("--offset", type=int, default=0, help="Skip this many distinct prompts first.")
        parser.add_argument("--batch-size", type=int, default=8, help="Prompts per engine call (default 8).")
        parser.add_argument("--steps", type=int, default=None, help="N (default: the serving default).")
        parser.add_argument(
            "--size", type=int, default=None, help="Width = height in pixels (default: the serving default)."
        )
        parser.add_argument("--seed", type=int, default=0, help="Seed of the first prompt; then +1 each.")
        parser.add_argument("--guidance-scale", type=float, default=7.5)
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args, **opts) -> None:
        if opts["batch_size"] < 1 or opts["limit"] < 0 or opts["offset"] < 0:
            raise CommandError("--batch-size must be >= 1; --limit and --offset must be >= 0")
        path = Path(opts["prompts"])
        if not path.is_file():
            raise CommandError(f"No prompt file at {path}")
        serving = ServingConfig.current()
        steps = opts["steps"] or serving.default_steps
        size = opts["size"] or serving.default_size
        if steps <= max(settings.T2I_CACHE_LEVELS):
            self.stderr.write(f"Note: N = {steps} captures only the cache levels below it.")

        prompts = read_prompt_file(path)[opts["offset"] : opts["offset"] + opts["limit"]]
        engine = runtime.warming_engine()
        # The same key the submit path and the workers compute (the folder's own scheduler).
        key = model_key_for(steps, size, size)

        # Operator prompts: tenant `public` (reusable in the shared and tenant scopes), no creator.
        cached = set(
            CacheEntry.objects.filter(model_key=key, tenant=PUBLIC_TENANT).values_list("prompt_sha", flat=True)
        )
        todo = [p for p in prompts if cache_store.prompt_sha(p) not in cached]
        self.stdout.write(
            f"Model key {key}: {len(prompts)} prompts, {len(prompts) - len(todo)} already "
            f"cached, {len(todo)} to generate (batch {opts['batch_size']})."
        )
        if not todo:
            return
        embeddings = cache_store.embed(todo)
        seeds = {p: opts["seed"] + i for i, p in enumerate(prompts)}
        started, stored = time.perf_counter(), 0
        bar = tqdm(total=len(todo), unit="prompt", desc="warm_cache", disable=opts["no_progress"])
        try:
            for at in range(0, len(todo), opts["batch_size"]):
                batch = todo[at : at + opts["batch_size"]]
                items = [
                    GenItem(
                        prompt=p,
                        seed=seeds[p],
                        width=size,
                        height=size,
                        steps=steps,
                        guidance_scale=opts["guidance_scale"],
                    )
                    for p in batch
                ]
                results = engine.generate(items)
                ids = cache_store.insert_many(
                    key,
                    batch,
                    [r.latents for r in results],
                    embeddings[at : at + len(batch)],
                    provenance=[cache_store.Provenance(PUBLIC_TENANT)] * len(batch),
                )
                stored += sum(i is not None for i in ids)
                bar.update(len(batch))
        finally:
            bar.close()
        s = cache_store.stats()
        self.stdout.write(
            self.style.SUCCESS(
                f"Cached {stored} prompts in {time.perf_counter() - started:.1f} s. Cache now: {s['entries']} "
                f"prompts, {s['levels']} latents, {s['bytes']} of {s['budget']} bytes."
            )
        )
