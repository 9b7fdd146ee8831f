"""`python -m scheduler.policy_gap`: the split of a gap between two policies over arrival bins adds up to the
gap in the summary metrics, the bins are labelled by how the arrivals change, and the CLI runs the sweep's
workloads end to end (fake embeddings, no model)."""

import json

import numpy as np
import pytest

import scheduler.policy_gap as policy_gap
from scheduler.interface import SchedulerConfig
from scheduler.profiles import load_profile
from scheduler.simulator import simulate
from scheduler.traces import load_trace, scale_trace
from tests.sim_helpers import fake_embed_file
from tests.test_scheduler_sweep import tiny_workload_argv, write_proteus

PROFILE = load_profile("sdxl-a100")


def test_the_bins_add_up_to_the_gap_in_the_summary_metrics(tmp_path):
    cfg = SchedulerConfig(n_workers=4, profile=PROFILE, slo_s=2 * PROFILE.latency(0, 1))
    arrivals = scale_trace(
        load_trace([str(write_proteus(tmp_path / "t.txt", n=400))]), 1.0, 1.5, cfg.top_level_capacity()
    )
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i % 60}, take {i}\n" for i in range(50 + arrivals.size)))
    emb = fake_embed_file(prompts)
    a = simulate("clipper_ha", cfg, arrivals, emb, 50, seed=1)  # quality 1, many violations at load 1.5
    b = simulate("prompt_aware", cfg, arrivals, emb, 50, seed=1)
    sa, sb = a.summary(list(cfg.levels), 30.0), b.summary(list(cfg.levels), 30.0)
    assert sa["slo_violation_ratio"] > sb["slo_violation_ratio"] and sa["effective_quality"] > sb["effective_quality"]
    bins = policy_gap.bin_gap(a, b, bin_s=5.0)
    assert bins["arrivals"].sum() == arrivals.size and np.all(np.diff(bins["start_s"]) == 5.0)
    assert bins["viol_excess"].sum() == pytest.approx(sa["slo_violation_ratio"] - sb["slo_violation_ratio"], abs=1e-12)
    assert bins["quality_edge"].sum() == pytest.approx(sb["effective_quality"] - sa["effective_quality"], abs=1e-12)
    assert (bins["viol_excess"] > 0).sum() > 1  # spread over several bins, not one lump


def test_bins_are_labelled_by_the_change_into_and_out_of_them():
    labels = policy_gap.label_bins(np.array([10.0, 20.0, 21.0, 5.0, 0.0]), change=0.3)
    assert list(labels["into"]) == ["rising", "rising", "steady", "falling", "falling"]
    assert list(labels["out of"]) == ["rising", "steady", "falling", "falling", "steady"]


def test_cli_end_to_end_on_a_tiny_matrix(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = tiny_workload_argv(tmp_path, monkeypatch, load="1.5", seeds=3, distinct=50)
    argv += ["--jobs", "2", "--bin", "5", "--out", str(out)]
    assert policy_gap.main(argv + ["--policies", "clipper_ha,prompt_aware"]) == 0
    doc = json.loads((out / "policy_gap.json").read_text())
    assert (out / "policy_gap.png").read_bytes().startswith(b"\x89PNG")
    w = doc["workloads"]["tw load 1.5 x2"]
    assert w["seeds"] == 3 and doc["policies"] == ["clipper_ha", "prompt_aware"]
    total = w["viol_excess"]["mean"]
    assert total > 0  # clipper_ha (every request at K′ = 0) has more violations at load 1.5
    for kind in ("into", "out of"):  # each labelling splits the whole gap
        parts = w["by_label"][kind]
        assert sum(parts[lab]["viol_excess"]["mean"] for lab in policy_gap.LABELS) == pytest.approx(total)
        assert sum(parts[lab]["requests"]["mean"] for lab in policy_gap.LABELS) == pytest.approx(1.0)
    assert sum(w["bins"]["viol_excess"]) == pytest.approx(total)
    printed = capsys.readouterr().out
    for text in ("tw load 1.5 x2 · clipper_ha against prompt_aware · 3 seeds", "by the change into them", "heaviest"):
        assert text in printed
    assert policy_gap.main(argv + ["--policies", "prompt_aware,oracle,nirvana"]) == 2
    assert "two simulator policies" in capsys.readouterr().err
