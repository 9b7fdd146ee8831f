"""Measured quality of approximate caching (issue 15, parts 4 and 5).

* the statistics and the g(K′) fit of ``workers.demo.measure_quality``, and the measurement end to end on the
  micro demo model (seconds);
* ``--quality measured:FILE``: the simulator and the sweep use a measured table (a fixture written here);
* live: a real worker process serving a micro demo model stores the scorer's adherence on the request row
  (null for a prompt outside the world's grammar), the dashboard summarises it and the owner's API shows it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scheduler.quality import QualityModel, load_measured, quality_from_spec
from scheduler.simulator import simulate
from tests.sim_helpers import cfg, clustered_stream
from workers.demo import measure_quality as mq

LEVELS = [0, 5, 10, 15, 20, 25]
EDGE = 0.965  # the fixture's second bin: about half the similarities of the test stream are above it
LOW_BIN = [1.0, 0.6, 0.6, 0.5, 0.5, 0.4]  # s in [0, EDGE)
HIGH_BIN = [1.0, 0.95, 0.9, 0.85, 0.8, 0.7]  # s ≥ EDGE


def _table_file(path: Path, bins: list[tuple[float, list[float]]]) -> Path:
    """A measured-quality file in the format measure_quality writes (only the fields the loader reads)."""
    doc = {"format": mq.FORMAT, "levels": LEVELS, "bins": [{"lo": lo, "q": q} for lo, q in bins]}
    path.write_text(json.dumps(doc))
    return path


def _expected(s: float, k: int) -> float:
    row = HIGH_BIN if s >= EDGE else LOW_BIN
    return float(np.interp(k, LEVELS, row))


# ----------------------------------------------------------------------------------------------------------
# Statistics and the fit
# ----------------------------------------------------------------------------------------------------------


def test_fit_recovers_the_default_yardstick():
    default = QualityModel()
    s = [0.55, 0.7, 0.8, 0.9, 0.97]
    for k in (5, 10, 15, 20, 25):
        q = [default.q(x, k) for x in s]
        g, rmse = mq.fit_g(s, q, [10] * len(s))
        assert g == pytest.approx(default.g_of(k), abs=2e-3) and rmse < 1e-3


def test_wilson_and_paired_bootstrap():
    assert mq.wilson(0, 10)[0] == 0.0 and mq.wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-3)
    assert mq.wilson(10, 10)[1] == pytest.approx(1.0)
    hits = np.array([[1, 1], [1, 0], [1, 1], [1, 0]], dtype=float)
    q, lo, hi = mq.bootstrap_ratio_ci(hits, np.random.default_rng(0), reps=500)
    assert q.tolist() == [1.0, 0.5] and lo[0] == hi[0] == 1.0 and 0.0 <= lo[1] < 0.5 < hi[1] <= 1.0


# ----------------------------------------------------------------------------------------------------------
# --quality measured:FILE
# ----------------------------------------------------------------------------------------------------------


def test_loader_reads_the_table_caps_at_one_and_refuses_bad_files(tmp_path):
    path = _table_file(tmp_path / "q.json", [(0.0, LOW_BIN), (0.9, [1.0, 1.02, 0.9, 0.85, 0.8, 0.7])])
    model = quality_from_spec(f"measured:{path}")
    assert model.table_edges == (0.0, 0.9) and model.table_levels == tuple(LEVELS)
    assert model.q(0.95, 5) == 1.0  # a measured ratio above 1 is noise: capped
    assert model.q(0.5, 25) == 0.4 and model.q(0.95, 12) == pytest.approx(0.88)
    assert model.to_dict()["source"] == str(path.resolve())
    assert quality_from_spec("default").table_values is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    for spec in (f"measured:{bad}", f"measured:{tmp_path / 'missing.json'}", "measured:", "yardstick"):
        with pytest.raises(ValueError):
            quality_from_spec(spec)


def test_simulator_serves_with_the_measured_table(tmp_path):
    """Every request nirvana serves from the cache gets the fixture's Q for its similarity and K′ — in
    both bins — and never the default yardstick's (whose floor is 0.75, above the fixture's 0.4–0.6)."""
    model = load_measured(_table_file(tmp_path / "q.json", [(0.0, LOW_BIN), (EDGE, HIGH_BIN)]))
    rng = np.random.default_rng(3)
    warm, arrivals = 100, np.sort(rng.uniform(0, 400, 500))
    embeddings = clustered_stream(warm + arrivals.size)
    run = simulate("nirvana", cfg(4, quality=model), arrivals, embeddings, warm, seed=1)
    served = np.flatnonzero((run.k_prime > 0) & np.isfinite(run.quality))
    low = [r for r in served if run.similarity[r] < EDGE]
    assert len(low) > 10 and len(served) - len(low) > 10  # both rows of the table are exercised
    for r in served:
        assert run.quality[r] == pytest.approx(_expected(run.similarity[r], int(run.k_prime[r])))
    assert run.quality[low].max() <= 0.6  # the default yardstick never goes below 0.75
    default = simulate("nirvana", cfg(4), arrivals, embeddings, warm, seed=1)
    assert np.nanmean(default.quality) > np.nanmean(run.quality)


def test_simulate_and_sweep_take_the_option(tmp_path, monkeypatch, capsys):
    import scheduler.simulate as cli
    import scheduler.sweep as sweep
    from tests.sim_helpers import fake_embed_file

    path = _table_file(tmp_path / "q.json", [(0.0, LOW_BIN), (EDGE, HIGH_BIN)])
    monkeypatch.setattr(cli, "embed_prompt_file", fake_embed_file)
    trace = tmp_path / "t.txt"
    trace.write_text("".join(f"{x:.3f}\n" for x in np.sort(np.random.default_rng(0).uniform(0, 60, 300))))
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(400)))
    common = ["--trace", str(trace), "--prompts", str(prompts), "--warm", "50", "--workers", "2", "--no-plots"]
    common += ["--policies", "nirvana", "--peak-load", "0.8"]
    results = {}
    for name, extra in (("default", []), ("measured", ["--quality", f"measured:{path}"])):
        assert cli.main([*common, "--out", str(tmp_path / name), *extra]) == 0
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
    table = results["measured"]["config"]["scheduler"]["quality"]["table"]
    assert table == {"edges": [0.0, EDGE], "levels": LEVELS, "values": [LOW_BIN, HIGH_BIN]}
    assert results["default"]["config"]["scheduler"]["quality"]["table"] is None
    q = {name: r["policies"]["nirvana"]["effective_quality"] for name, r in results.items()}
    assert q["measured"] < q["default"]
    with pytest.raises(SystemExit) as exc:
        cli.main([*common, "--out", str(tmp_path / "x"), "--quality", "measured:/no/such/file.json"])
    assert exc.value.code == 2 and "cannot read the measured quality table" in capsys.readouterr().err
    args = sweep.build_parser().parse_args(
        ["--traces", str(trace), "--prompts", str(prompts), "--quality", f"measured:{path}"]
    )
    config = cli._scheduler_config(args, cli.load_profile("sdxl-a100"))
    assert config.quality.table_values == (tuple(LOW_BIN), tuple(HIGH_BIN))


# ----------------------------------------------------------------------------------------------------------
# The measurement, end to end on the micro demo model
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    from workers.demo.build import build_config, build_demo_model

    out = tmp_path_factory.mktemp("demo") / "micro"
    build_demo_model(out, build_config("micro"), log=lambda line: None, progress=False)
    return out


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_measurement_end_to_end_on_the_micro_model(micro, tmp_path):
    out, figure = tmp_path / "q.json", tmp_path / "q.png"
    assert mq.main([str(micro), "--pairs", "16", "--out", str(out), "--plot", str(figure), "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == mq.FORMAT and doc["levels"] == LEVELS and doc["pairs"] == 16
    assert sum(b["pairs"] for b in doc["bins"]) == 16 and set(doc["relations"]) == set(mq.RELATIONS)
    # An exact repeat (same prompt, and the K′ = 0 image uses the neighbour's seed) resumes bit-exactly:
    # fidelity 1 and the same adherence at every K′. Its similarity is 1: the top bin.
    repeat = doc["relations"]["repeat"]
    assert repeat["s_min"] == pytest.approx(1.0, abs=1e-5) and min(repeat["fidelity_ssim"]) >= 0.999
    assert len(set(repeat["adherence"])) == 1
    assert doc["bins"][-1]["lo"] == 0.999
    for b in doc["bins"]:
        assert b["fidelity_ssim"][0] == 1.0 and all(-1.0 <= x <= 1.0 for x in b["fidelity_ssim"])
        assert all(0.0 <= a <= 1.0 for a in b["adherence"])
    assert set(doc["fit"]["g"]) == {"5", "10", "15", "20", "25"}
    raw = doc["per_pair"]
    assert len(raw["s"]) == 16 and max(raw["s"]) <= 1.0 and len(raw["ssim"][0]) == 6
    assert all(0 <= bits < 16 for row in raw["attributes_right"] for bits in row)
    assert figure.stat().st_size > 10_000
    if any(all(x is not None for x in b["q"]) for b in doc["bins"]):  # the micro model may adhere nowhere
        assert load_measured(out).table_levels == tuple(LEVELS)


# ----------------------------------------------------------------------------------------------------------
# Live: a real worker process on the micro demo model
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # a real worker process reads these rows
def test_worker_records_measured_adherence(micro, user, other_user, api, worker_env, settings):
    from knox.models import AuthToken
    from rest_framework.test import APIClient

    from tests.conftest import WorkerProcess
    from tests.helpers import make_request, wait_for_status
    from webapp.dashboard import metrics_queries
    from webapp.ledger.models import Status
    from webapp.ledger.publishing import publish
    from webapp.ledger.queues import gpu_queue
    from workers.demo.live_scoring import adherence_scores

    slot = 8  # a slot of its own: no session worker (tiny random model) picks these rows up
    log = Path(os.environ["T2I_TEST_RUN_DIR"]) / "logs" / "gpu.8-demo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(gpu_queue(slot), slot, dict(worker_env, T2I_MODEL_PATH=str(micro)), log)
    worker.start()
    try:
        prompt = "a red circle at the top left on a gray background"
        rows = [
            make_request(user, prompt=p, width=32, height=32, steps=10, worker=slot)
            for p in (prompt, "a lighthouse at dusk, oil painting")
        ]
        for row in rows:
            publish(row.id, slot)
        parsed, unparsed = (wait_for_status(r.id, {Status.SUCCEEDED, Status.FAILED}, timeout=120) for r in rows)
    finally:
        worker.stop()
    assert parsed.status == unparsed.status == Status.SUCCEEDED, (parsed.error, unparsed.error)
    assert "demo model" in parsed.model_label
    assert parsed.measured_adherence in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert unparsed.measured_adherence is None
    # The stored value is the scorer's reading of the very image served (PNG: lossless).
    image = Image.open(Path(settings.MEDIA_ROOT) / parsed.image.name)
    assert adherence_scores(micro, [prompt], [image]) == [parsed.measured_adherence]

    summary = metrics_queries.snapshot("15m")["summary"]
    assert summary["adherence_scored"] == 1
    assert summary["measured_adherence"] == (1.0 if parsed.measured_adherence == 1.0 else 0.0)
    assert parsed.quality is not None and summary["scored_quality"] == pytest.approx(parsed.quality)

    body = api.get(f"/api/v1/generations/{parsed.id}/").json()
    assert body["measured_adherence"] == parsed.measured_adherence
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=other_user)[1]}")
    assert stranger.get(f"/api/v1/generations/{parsed.id}/").status_code == 404
