"""The marker file of a demo model folder (``demo_model.json``): what the app needs to label its images and
to tell users which words the model knows, plus how it was trained and how well it adheres to prompts.

Django-free, torch-free: the worker reads it when it loads a model.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER_FILE = "demo_model.json"
SCORER_FOLDER = "scorer"  # the attribute scorer, saved beside the model


def is_demo_model(folder: Path | str) -> bool:
    """True when ``folder`` was built by ``manage.py build_demo_model``."""
    return (Path(folder) / MARKER_FILE).is_file()


def read_marker(folder: Path | str) -> dict:
    return json.loads((Path(folder) / MARKER_FILE).read_text())


def write_marker(folder: Path | str, marker: dict) -> None:
    (Path(folder) / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


def scorer_folder(model_folder: Path | str) -> Path:
    return Path(model_folder) / SCORER_FOLDER
