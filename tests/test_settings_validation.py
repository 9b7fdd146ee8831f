"""Choice-valued settings are checked when a process starts: a typo stops it with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def start_django(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "name, value, says",
    [
        ("T2I_ENGINE", "emulatd", "T2I_ENGINE must be one of 'diffusers', 'emulated', not 'emulatd'"),
        ("T2I_SCHEDULER", "pndm", "T2I_SCHEDULER must be one of '' (empty), 'ddim', 'euler', not 'pndm'"),
        ("T2I_EMBEDDER", "bert", "T2I_EMBEDDER must be one of 'minilm', 'clip', not 'bert'"),
        ("T2I_DEVICE", "gpu0", "T2I_DEVICE must be empty, cpu, mps, cuda or cuda:<index>, not 'gpu0'"),
        ("T2I_METRICS_WINDOW", "2m", "T2I_METRICS_WINDOW must be one of '5m', '15m', '1h', '6h', '24h', not '2m'"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be one of 'DEBUG', 'INFO'"),
    ],
)
def test_a_bad_choice_stops_the_process_and_says_what_is_allowed(name, value, says):
    result = start_django(**{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and says in result.stderr


def test_good_choices_start():
    result = start_django(T2I_ENGINE="emulated", T2I_SCHEDULER="euler", T2I_DEVICE="cuda:1", LOG_LEVEL="WARNING")
    assert result.returncode == 0, result.stderr
