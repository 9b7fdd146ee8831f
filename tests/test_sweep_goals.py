"""Issue 13's goals G1–G4 (scheduler.sweep_goals) on hand-made aggregates: what passes, what fails, and how
each verdict reads."""

import scheduler.sweep_goals as sweep_goals


def workload(means, load=1.0, time_scale=6.5, paired_q=None):
    """A hand-made aggregate: {policy: (viol, Q)} means; paired Q differences (policy − PA: mean, ci)."""
    stat = lambda v: {"mean": v, "ci": 0.0, "sd": 0.0, "n": 10}
    w = {"trace": "t", "load": load, "time_scale": time_scale}
    w["policies"] = {p: {"slo_violation_ratio": stat(v), "effective_quality": stat(q)} for p, (v, q) in means.items()}
    w["paired"] = {p: {"effective_quality": {"mean": m, "ci": c, "n": 10}} for p, (m, c) in (paired_q or {}).items()}
    return w


BASE = {
    "prompt_aware": (0.001, 0.920),
    "clipper_ha": (0.40, 1.0),
    "clipper_ht": (0.0, 0.757),
    "nirvana": (0.40, 0.966),
    "proteus": (0.002, 0.905),
    "oracle": (0.001, 0.925),
}


def verdicts(workloads, compressed=(2.0,)):
    return {g["goal"].split()[0]: g for g in sweep_goals.check_goals(workloads, 1.0, list(compressed))}


def test_goals_pass_on_hand_made_aggregates():
    ws = {
        "a": workload(BASE, paired_q={"proteus": (-0.015, 0.004)}),
        "b": workload(BASE | {"oracle": (0.0, 0.921)}, time_scale=2.0, paired_q={"proteus": (-0.015, 0.004)}),
    }
    g = verdicts(ws)
    assert [g[k]["verdict"] for k in ("G1", "G2", "G3", "G4")] == ["PASS"] * 4
    assert len(g["G4"]["records"]) == 1 and "ΔQ ≥ +0.01" in g["G2"]["criterion"]
    printed = sweep_goals.format_goals(list(g.values()))
    assert printed.count("PASS") == 4 and "tightest" in printed


def test_an_oracle_that_sees_less_than_a_period_ahead_is_named_in_the_verdicts():
    """--oracle-lookahead changes what G3 and G4 compare with, so their verdicts say which oracle it was."""
    from tests.sim_helpers import cfg

    assert sweep_goals.oracle_label(cfg()) == "oracle" == sweep_goals.oracle_label(cfg(oracle_lookahead_s=10.0))
    label = sweep_goals.oracle_label(cfg(oracle_lookahead_s=2.0))
    assert "2 s ahead" in label and "not the issue's" in label
    paired = {"proteus": (-0.015, 0.004)}
    goals = sweep_goals.check_goals({"a": workload(BASE, time_scale=2.0, paired_q=paired)}, 1.0, [2.0], oracle=label)
    names = {g["goal"].split()[0]: g["goal"] for g in goals}
    assert names["G3"].endswith(label) and names["G4"].endswith(label)
    plain = sweep_goals.check_goals({"a": workload(BASE, paired_q=paired)}, 1.0, [2.0])
    default = {g["goal"].split()[0]: g["goal"] for g in plain}
    assert default["G3"] == "G3 close to oracle" and default["G4"] == "G4 lag at compressed time scale 2"


def test_each_oracle_at_a_run_adds_an_informational_g3_line_and_the_issues_g3_stays():
    """`--policies …,oracle@A`: after G1–G4 (G3 still against the default oracle), one G3 line per oracle@A, in
    order of A, so that one sweep prints how the verdict moves with the oracle's foresight."""
    paired = {"proteus": (-0.015, 0.004)}
    means = BASE | {"oracle@2": (0.0, 0.95), "oracle@0": (0.01, 0.925)}  # A = 2 s: Q too far above PA's 0.920
    goals = sweep_goals.check_goals({"a": workload(means, time_scale=2.0, paired_q=paired)}, 1.0, [2.0])
    names = [g["goal"] for g in goals]
    assert [n.split()[0] for n in names] == ["G1", "G2", "G3", "G4", "G3", "G3"]
    assert names[2] == "G3 close to oracle" and goals[2]["verdict"] == "PASS"
    assert names[4].startswith("G3 vs oracle@0 ") and "informational" in names[4] and goals[4]["verdict"] == "PASS"
    assert names[5].startswith("G3 vs oracle@2 ") and goals[5]["verdict"] == "FAIL"
    assert "of oracle@2 0.9500" in goals[5]["records"][0]["text"]


def test_a_g3_miss_says_whether_the_paired_difference_to_the_oracle_is_beyond_seed_noise():
    """G3's verdict is on seed means; each miss also shows the per-seed PA − oracle differences with their CIs
    and says whether the miss could be seed noise, and the verdict line counts the misses beyond it."""
    paired_q = {"proteus": (-0.015, 0.004)}
    means = BASE | {"prompt_aware": (0.010, 0.920), "oracle": (0.005, 0.925)}  # viol 0.5 pp over: a miss

    def with_oracle_pairs(viol_ci):
        w = workload(means, paired_q=paired_q)
        w["paired"]["oracle"] = {  # oracle − PA, per seed
            "slo_violation_ratio": {"mean": -0.005, "ci": viol_ci, "n": 10},
            "effective_quality": {"mean": 0.005, "ci": 0.001, "n": 10},
        }
        return w

    goals = sweep_goals.check_goals({"noisy": with_oracle_pairs(0.008), "clear": with_oracle_pairs(0.002)}, 1.0)
    g3 = next(g for g in goals if g["goal"].startswith("G3"))
    noisy, clear = g3["records"]
    assert g3["verdict"] == "FAIL" and not noisy["ok"] and not clear["ok"]
    assert noisy["beyond_noise"] is False and noisy["text"].endswith("within seed noise")
    assert clear["beyond_noise"] is True and clear["text"].endswith("beyond seed noise")
    assert "Δviol +0.50 pp (CI +0.30…+0.70)" in clear["text"] and "ΔQ -0.0050" in clear["text"]
    assert "1 of the 2 misses beyond seed noise" in sweep_goals.format_goals(goals)
    # a passing workload carries the differences but no noise judgement
    ok = with_oracle_pairs(0.002)
    ok["policies"]["prompt_aware"]["slo_violation_ratio"]["mean"] = 0.005
    record = next(g for g in sweep_goals.check_goals({"ok": ok}, 1.0) if g["goal"].startswith("G3"))["records"][0]
    assert record["ok"] and "beyond_noise" not in record and "paired PA − oracle" in record["text"]


def test_goals_fail_on_hand_made_aggregates():
    dominated = BASE | {"nirvana": (0.0, 0.966)}  # NIRVANA: fewer violations and higher quality
    too_many = BASE | {"prompt_aware": (0.02, 0.92), "oracle": (0.0, 0.925)}  # > lowest + 1 pp, > 2 × oracle + 1 pp
    ws = {
        "dominated": workload(dominated, paired_q={"proteus": (-0.005, 0.002)}),  # ΔQ below +0.01
        "lagging": workload(too_many, load=0.6, time_scale=2.0),
    }
    g = verdicts(ws)
    assert [g[k]["verdict"] for k in ("G1", "G2", "G3", "G4")] == ["FAIL"] * 4
    assert "nirvana" in g["G1"]["records"][0]["text"] and "lowest" in g["G1"]["records"][1]["text"]
    assert "FAIL dominated" in sweep_goals.format_goals(list(g.values()))
    # the CI must clear 0 as well
    wide = {"w": workload(BASE, paired_q={"proteus": (-0.015, 0.02)})}
    assert verdicts(wide)["G2"]["verdict"] == "FAIL"
    # no compressed time scale in the matrix: G4 has nothing to check
    assert verdicts(wide, compressed=())["G4"]["verdict"] == "n/a"


def test_goal_2_uses_the_hindsight_headroom_when_one_hundredth_is_not_available():
    small = BASE | {"hindsight": (0.0, 0.913)}  # headroom 0.008 over PROTEUS's 0.905
    ok = verdicts({"w": workload(small, paired_q={"proteus": (-0.006, 0.002)})})["G2"]  # captures 75 %
    assert ok["verdict"] == "PASS" and "capture" in ok["criterion"] and "capture 75%" in ok["records"][0]["text"]
    low = verdicts({"w": workload(small, paired_q={"proteus": (-0.004, 0.002)})})["G2"]  # 50 %
    assert low["verdict"] == "FAIL"
    big = BASE | {"hindsight": (0.0, 0.95)}  # +0.01 is available: the primary criterion applies
    assert "ΔQ ≥ +0.01" in verdicts({"w": workload(big, paired_q={"proteus": (-0.006, 0.002)})})["G2"]["criterion"]
