from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from workers.demo.build import CONFIGS, build_config, build_demo_model

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "demo" / "pretrained"


class Command(BaseCommand):
    help = (
        "Train the demo text-to-image model of the shapes world on the CPU (scorer, VAE, UNet + text "
        "encoder; seeded, fixed step counts), print the adherence curve and the scorer's accuracies, and "
        "save a stock StableDiffusionPipeline folder (DDIM) with the scorer and demo_model.json."
    )

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"Folder to write (default {DEFAULT_OUT}).")
        parser.add_argument("--config", choices=sorted(CONFIGS), default="default")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--threads", type=int, default=1, help="torch threads (1 made the committed weights; 2 is faster idle)."
        )
        parser.add_argument("--unet-steps", type=int, help="Override the UNet step count of the config.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
        parser.add_argument("--force", action="store_true", help="Overwrite a folder that already holds a model.")

    def handle(self, *args, out: Path, config: str, seed: int, threads: int, unet_steps, no_progress, force, **kw):
        if (out / "model_index.json").exists() and not force:
            raise CommandError(f"{out} already holds a model (use --force to rebuild it)")
        overrides = {"unet_steps": unet_steps} if unet_steps else {}
        result = build_demo_model(
            out,
            build_config(config, seed=seed, **overrides),
            log=self.stdout.write,
            progress=not no_progress,
            threads=threads,
        )
        a = result.final.accuracy
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo model saved to {out}: adherence (all four) {a['all']:.1%} over {result.final.captions} "
                f"captions after {result.training_cpu_minutes:.1f} CPU-min / {result.training_wall_minutes:.1f} "
                "wall-min of training."
            )
        )
