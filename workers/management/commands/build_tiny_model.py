from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from workers.tiny_model import KINDS, SCHEDULERS, build_tiny_pipeline


class Command(BaseCommand):
    help = (
        "Build a tiny randomly initialised Stable Diffusion pipeline offline (real CLIP "
        "vocabulary, random weights) and save it where T2I_MODEL_PATH points."
    )

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, default=settings.T2I_MODEL_PATH)
        parser.add_argument("--kind", choices=KINDS, default="sd")
        parser.add_argument("--scheduler", choices=SCHEDULERS, default="ddim")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--force", action="store_true", help="Rebuild even if the folder exists.")

    def handle(self, *args, out: Path, kind: str, scheduler: str, seed: int, force: bool, **kw):
        if (out / "model_index.json").exists() and not force:
            self.stdout.write(f"Model already present at {out} (use --force to rebuild).")
            return
        build_tiny_pipeline(out, kind=kind, scheduler=scheduler, seed=seed)
        self.stdout.write(self.style.SUCCESS(f"Tiny random {kind} pipeline ({scheduler}) saved to {out}"))
