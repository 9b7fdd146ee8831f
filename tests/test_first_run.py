"""The first `make run` (issue 12, item 11): the long install shows pip's progress, and the README says how long
it takes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_long_install_is_not_silent():
    recipe = [line for line in (ROOT / "Makefile").read_text().splitlines() if "-r requirements.txt" in line]
    assert recipe, "the Makefile installs requirements.txt"
    assert all("--quiet" not in line and " -q" not in line for line in recipe), recipe


def test_the_readme_says_how_long_the_first_run_takes():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"first `make run` takes[^.]*\.[^*]*\*\*\d+ min \d+ s\*\*", readme, re.S)
