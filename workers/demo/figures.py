"""The figures of docs/demo_model.md, from a demo model folder.

* ``demo_adherence.png``: the adherence curve (adherence against training minutes) from ``demo_model.json``;
* ``demo_samples.png``: one row of images per guidance scale, the same captions and seeds in every row
  (the README's prompt first, then 15 evaluation captions), generated through the engine at K′ = 0.

``python -m workers.demo.figures MODEL_FOLDER OUT_DIR``. Django-free; matplotlib is imported on use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from workers.demo.adherence import evaluation_captions, generate
from workers.demo.marker import read_marker
from workers.engine import load_pipeline

SAMPLE_GUIDANCE = (1.0, 2.0, 3.0, 5.0, 7.5)
README_PROMPT = "a red circle at the top left on a gray background"

SERIES = (("all", "all four", "k"), ("colour", "colour", "tab:red"), ("shape", "shape", "tab:blue"))
SERIES += (("position", "position", "tab:green"), ("background", "background", "tab:gray"))


def save_figure(fig, out: Path | str) -> Path:
    """Lay out, write (making the folder) and close a matplotlib figure; its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_adherence_curve(model_folder: Path | str, out: Path | str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = read_marker(model_folder)
    curve = info["adherence_curve"]
    minutes = [p["cpu_minutes"] for p in curve]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for key, label, colour in SERIES:
        values = [100 * p[key] for p in curve]
        ax.plot(minutes, values, marker="o", label=label, color=colour, lw=2 if key == "all" else 1)
    ax.axhline(80, color="k", ls=":", lw=0.8)  # the target: 80 % within 15 minutes
    ax.axvline(15, color="k", ls=":", lw=0.8)
    ax.set_xlabel("training CPU-minutes (VAE + UNet + text encoder)")
    ax.set_ylabel("adherence, % of captions")
    ax.set_ylim(0, 102)
    threads = info.get("torch_threads", "?")
    captions = "/".join(str(p["captions"]) for p in curve)  # checkpoints may use fewer captions than the end
    ax.set_title(
        f"Demo model ({info['training'].get('name', '?')}): adherence at K=0, {info['steps']} DDIM steps, "
        f"guidance {info['guidance_scale']}, torch threads {threads}\n"
        f"captions per point: {captions}; position hidden under background"
    )
    ax.title.set_fontsize(9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, out)


def sample_grid(model_folder: Path | str, out: Path | str, guidance: tuple[float, ...] = SAMPLE_GUIDANCE) -> Path:
    """16 captions × the guidance scales, 3× enlarged; returns ``out``."""
    pipe = load_pipeline(model_folder, device="cpu")
    captions = [README_PROMPT] + [c for c, _ in evaluation_captions(15, seed=3)]
    rows = [np.concatenate([np.asarray(im) for im in generate(pipe, captions, guidance=g)], 1) for g in guidance]
    grid = np.concatenate(rows, 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.Resampling.NEAREST).save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_folder", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    print(plot_adherence_curve(args.model_folder, args.out_dir / "demo_adherence.png"))
    print(sample_grid(args.model_folder, args.out_dir / "demo_samples.png"))


if __name__ == "__main__":
    main()
