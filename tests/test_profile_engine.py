"""`manage.py profile_engine` measures the real engine and writes a profile the scheduler reads."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from scheduler.profiles import load_profile


@pytest.mark.django_db
def test_profile_engine_writes_a_profile_the_scheduler_loads(tiny_model_path, tmp_path, embedded_services):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "\n".join(
            [
                f"a painting of a {w} at dawn"
                for w in ("lighthouse", "fox", "castle", "boat", "lighthouse tower", "red fox")
            ]
        )
    )
    call_command(
        "profile_engine",
        "--out-dir",
        str(tmp_path),
        "--prompts",
        str(prompts),
        "--repeats",
        "1",
        "--batch-sizes",
        "1,2",
        "--steps",
        "30",
        "--warm",
        "3",
        "--measure",
        "3",
    )
    profile = load_profile(str(tmp_path / "engine.csv"), n_steps=30)
    assert profile.batch_sizes == (1, 2)
    # Measured, not modelled: every level has its own row, and skipping steps is faster.
    assert profile.latency(25, 1) < profile.latency(0, 1)
    table = json.loads((tmp_path / "quality.json").read_text())
    assert table["levels"] == [0, 5, 10, 15, 20, 25] and table["measured"] == 3
    assert sum(row[0] for row in table["counts"]) == 3
    assert all(row[0] in (None, 1.0) for row in table["values"])  # K = 0 is the reference itself
