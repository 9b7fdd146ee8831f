"""The bounded subset of the fault-injection suite (tests/chaos.py) in `make test`: a real stack started by
`python -m webapp.stack.run` (embedded PostgreSQL and Redis, the supervisor, emulated GPU workers with the
SDXL profile's SLO and the default recovery timings), a GPU worker SIGKILLed twice, each time just as it
began a request, which must then be re-run (or end explicitly). Nothing accepted may be lost and no image
computed twice. How many requests end on time depends on how busy the machine is, so that is reported by
`python -m tests.chaos`, not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.chaos import ROOT


@pytest.mark.slow
def test_killing_a_gpu_worker_twice_mid_request_loses_no_request(tmp_path):
    out = tmp_path / "rows.json"
    argv = [sys.executable, "-m", "tests.chaos", "--scenarios", "worker_kill", "--workers", "2", "--load", "1.0"]
    argv += ["--duration", "15", "--keep", str(tmp_path / "data"), "--json", str(out)]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert result.returncode == 0, result.stdout[-3000:]  # nothing lost, and the fault struck both times
    assert row["accepted"] >= 1, row
    assert row["lost"] == 0 and row["duplicated"] == 0, row
    assert row["succeeded"] + row["expired"] + row["failed"] == row["accepted"], row
    kills = row["hits"]
    assert len(kills) == 2 and all(kill["running"] for kill in kills), kills  # each kill interrupted work
    for kill in kills:
        for status, attempts in (kill["ended"][i] for i in kill["running"]):
            assert status in ("succeeded", "expired", "failed"), kill
            assert status != "succeeded" or attempts >= 2, kill  # a success after the kill is a re-run
    log = (tmp_path / "data" / "stack.out").read_text()
    for process in {kill["process"] for kill in kills}:
        assert f"{process} was killed by SIGKILL" in log, "the supervisor saw the kill and restarted the worker"
