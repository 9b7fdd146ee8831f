"""The bounded subset of the fault-injection suite (tests/chaos.py) in `make test`: a real stack started by
`python -m webapp.stack.run` (embedded PostgreSQL and Redis, the supervisor, emulated GPU workers with the
SDXL profile's SLO and the default recovery timings), a GPU worker SIGKILLed twice under load. Nothing
accepted may be lost and no image computed twice. How many requests end on time depends on how busy the
machine is, so that is reported by `python -m tests.chaos`, not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.chaos import ROOT


def test_killing_a_gpu_worker_twice_loses_no_request(tmp_path):
    out = tmp_path / "rows.json"
    argv = [sys.executable, "-m", "tests.chaos", "--scenarios", "worker_kill", "--workers", "2"]
    argv += ["--duration", "25", "--keep", str(tmp_path / "data"), "--json", str(out)]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["accepted"] >= 1, row
    assert row["lost"] == 0 and row["duplicated"] == 0, row
    assert row["succeeded"] + row["expired"] + row["failed"] == row["accepted"], row
    restarts = (tmp_path / "data" / "stack.out").read_text().count("worker-gpu.0 was killed by SIGKILL")
    assert restarts == 2, "both kills happened and the supervisor saw them"
