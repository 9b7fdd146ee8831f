"""Issue 13's goals G1–G4 checked on the sweep's aggregates (`sweep_stats.aggregate`), and their printed
verdicts. The criteria are spelled out in `python -m scheduler.sweep --help`; the oracle and hindsight are
bounds, not baselines."""

from __future__ import annotations

import math

from .interface import SchedulerConfig
from .policies import oracle_variant
from .sweep_stats import QUALITY, REFERENCE, VIOL

LIVE_POLICIES = ("prompt_aware", "clipper_ha", "clipper_ht", "nirvana", "proteus")
BASELINES = tuple(p for p in LIVE_POLICIES if p != REFERENCE)
HINDSIGHT = "hindsight"
# goal thresholds (issue 13), as ratios
G1_VIOL_TOL, G1_LOWEST_TOL = 0.005, 0.01
G2_MARGIN, G2_VIOL_TOL, G2_CAPTURE = 0.01, 0.001, 0.60
G3_RATIO, G3_VIOL_TOL = 0.99, 0.001
G4_FACTOR, G4_ADD = 2.0, 0.01


def _m(w: dict, policy: str, metric: str) -> float:
    return w["policies"][policy][metric]["mean"]


def _pp(x: float) -> str:
    return f"{100 * x:.2f}%"


def oracle_label(cfg: SchedulerConfig) -> str:
    """What G3 and G4 compare with: "oracle", or, when `--oracle-lookahead` makes it see less than a period
    ahead, a name that says so (those verdicts are then not the issue's)."""
    if cfg.oracle_lookahead >= cfg.period_s:
        return "oracle"
    return f"oracle seeing {cfg.oracle_lookahead:g} s ahead (--oracle-lookahead; not the issue's oracle)"


def check_goals(
    workloads: dict[str, dict], g2_load: float = 1.0, compressed: list[float] | None = None, oracle: str = "oracle"
) -> list:
    """Goals 1–4 of issue 13 on the aggregates: per goal a verdict (PASS, FAIL, n/a), the criterion and one
    record per workload checked ({workload, ok, margin, text}; margin < 0 where it fails). `oracle` names
    what G3 and G4 compare with (`oracle_label`). Every `oracle@A` policy run adds a G3 line against that
    oracle (seeing A s ahead), after G4: how the verdict moves with foresight, not one of the issue's goals."""
    compressed = list(compressed or [])
    with_oracle = {k: w for k, w in workloads.items() if _has(w, REFERENCE, "oracle")}
    g1 = [_g1(k, w) for k, w in workloads.items() if _has(w, REFERENCE) and any(_has(w, b) for b in BASELINES)]
    g3 = [_g3(k, w) for k, w in with_oracle.items()]
    g4 = [_g4(k, w) for k, w in with_oracle.items() if any(math.isclose(w["time_scale"], c) for c in compressed)]
    scales = ", ".join(f"{c:g}" for c in compressed) or "none given"
    vs = "" if oracle == "oracle" else f" vs {oracle}"
    variants = sorted(
        {p for w in workloads.values() for p in w["policies"] if oracle_variant(p) is not None}, key=oracle_variant
    )
    return [
        _goal("G1 not dominated", "no baseline at ≤ PA's viol + 0.5 pp has higher Q; PA viol ≤ lowest + 1 pp", g1),
        _g2(workloads, g2_load),
        _goal(f"G3 close to {oracle}", "Q ≥ 0.99 × oracle's at viol ≤ oracle's + 0.1 pp", g3),
        _goal(f"G4 lag at compressed time scale {scales}{vs}", "viol ≤ 2 × oracle's + 1 pp", g4),
        *(_g3_against(workloads, v) for v in variants),
    ]


def _g3_against(workloads: dict[str, dict], variant: str) -> dict:
    """G3's test against the oracle of an `oracle@A` run (informational: the issue's G3 is the line above)."""
    records = [_g3(k, w, variant) for k, w in workloads.items() if _has(w, REFERENCE, variant)]
    name = f"G3 vs {variant} (the oracle seeing {oracle_variant(variant):g} s ahead; informational)"
    return _goal(name, "Q ≥ 0.99 × its Q at viol ≤ its viol + 0.1 pp", records)


def _has(w: dict, *policies: str) -> bool:
    return all(p in w["policies"] for p in policies)


def _goal(name: str, criterion: str, records: list[dict]) -> dict:
    verdict = "n/a" if not records else ("PASS" if all(r["ok"] for r in records) else "FAIL")
    return {"goal": name, "verdict": verdict, "criterion": criterion, "records": records}


def _g1(key: str, w: dict) -> dict:
    v_pa, q_pa = _m(w, REFERENCE, VIOL), _m(w, REFERENCE, QUALITY)
    problems, margin = [], math.inf
    for b in (b for b in BASELINES if b in w["policies"]):
        v_b, q_b = _m(w, b, VIOL), _m(w, b, QUALITY)
        if v_b <= v_pa + G1_VIOL_TOL:
            margin = min(margin, q_pa - q_b)
            if not q_pa >= q_b:
                problems.append(f"{b} viol {_pp(v_b)} Q {q_b:.4f} > PA Q {q_pa:.4f}")
    lowest = min((p for p in LIVE_POLICIES if p in w["policies"]), key=lambda p: _m(w, p, VIOL))
    v_low = _m(w, lowest, VIOL)
    margin = min(margin, (v_low + G1_LOWEST_TOL - v_pa) if math.isfinite(v_pa) else -math.inf)
    if not v_pa <= v_low + G1_LOWEST_TOL:
        problems.append(f"PA viol {_pp(v_pa)} > lowest ({lowest}) {_pp(v_low)} + 1 pp")
    text = f"{key}: PA viol {_pp(v_pa)} Q {q_pa:.4f}; " + ("; ".join(problems) or f"lowest viol {lowest} {_pp(v_low)}")
    return {"workload": key, "ok": not problems, "margin": margin, "text": text}


def _g2(workloads: dict[str, dict], load: float) -> dict:
    records, criteria = [], set()
    for key, w in workloads.items():
        if not math.isclose(w["load"], load) or not _has(w, REFERENCE, "proteus"):
            continue
        q_pa, q_p = _m(w, REFERENCE, QUALITY), _m(w, "proteus", QUALITY)
        v_pa, v_p = _m(w, REFERENCE, VIOL), _m(w, "proteus", VIOL)
        paired = w["paired"]["proteus"][QUALITY]  # proteus − PA, per seed
        d_q, ci = -paired["mean"], paired["ci"]  # PA − proteus
        ci_above = math.isfinite(ci) and d_q - ci > 0
        viol_ok = v_pa <= v_p + G2_VIOL_TOL
        head = _m(w, HINDSIGHT, QUALITY) - q_p if HINDSIGHT in w["policies"] else math.nan
        if math.isfinite(head) and head < G2_MARGIN:
            criteria.add("capture ≥ 60 % of the hindsight headroom")
            ok = viol_ok and d_q >= G2_CAPTURE * head
            capture = f"{d_q / head:.0%}" if head > 0 else "n/a (no headroom)"
            what = f"headroom {head:+.4f} < 0.01: capture {capture}"
            margin = min(d_q - G2_CAPTURE * head, v_p + G2_VIOL_TOL - v_pa)
        else:
            criteria.add("ΔQ ≥ +0.01 with CI > 0")
            ok = viol_ok and d_q >= G2_MARGIN and ci_above
            what = f"ΔQ {d_q:+.4f}" + (f" (hindsight headroom {head:+.4f})" if math.isfinite(head) else "")
            margin = min(d_q - G2_MARGIN, d_q - ci if math.isfinite(ci) else -math.inf, v_p + G2_VIOL_TOL - v_pa)
        text = (
            f"{key}: Q PA {q_pa:.4f} vs PROTEUS {q_p:.4f}, {what}, paired 95 % CI {d_q - ci:+.4f}…{d_q + ci:+.4f}; "
            f"viol PA {_pp(v_pa)} vs PROTEUS {_pp(v_p)}"
        )
        records.append({"workload": key, "ok": ok, "margin": margin, "text": text})
    goal = _goal(
        f"G2 margin over PROTEUS at load {load:g}",
        " / ".join(sorted(criteria) or ["ΔQ ≥ +0.01 with CI > 0 (hindsight headroom < 0.01: capture ≥ 60 %)"])
        + ", viol ≤ PROTEUS's + 0.1 pp",
        records,
    )
    return goal


def _g3(key: str, w: dict, oracle: str = "oracle") -> dict:
    q_pa, q_o = _m(w, REFERENCE, QUALITY), _m(w, oracle, QUALITY)
    v_pa, v_o = _m(w, REFERENCE, VIOL), _m(w, oracle, VIOL)
    ok = q_pa >= G3_RATIO * q_o and v_pa <= v_o + G3_VIOL_TOL
    margin = min(q_pa - G3_RATIO * q_o, v_o + G3_VIOL_TOL - v_pa)
    text = f"{key}: Q {q_pa:.4f} = {q_pa / q_o:.2%} of {oracle} {q_o:.4f}; viol {_pp(v_pa)} vs {oracle} {_pp(v_o)}"
    paired, beyond_noise = _g3_paired(w, oracle, q_o)
    record = {"workload": key, "ok": bool(ok), "margin": margin, "text": text + paired}
    if not ok and beyond_noise is not None:
        record["beyond_noise"] = beyond_noise
        record["text"] += "; beyond seed noise" if beyond_noise else "; within seed noise"
    return record


def _g3_paired(w: dict, oracle: str, q_o: float) -> tuple[str, bool | None]:
    """The per-seed differences PA − oracle (violations, quality) with their 95 % CIs, and whether G3's miss
    is beyond seed noise: the CI of the violation excess over the tolerance, or of the quality shortfall
    under 0.99 × the oracle's (its mean taken as fixed), lies wholly on the failing side. (None: no pairs.)"""
    d = w.get("paired", {}).get(oracle, {})
    if VIOL not in d or QUALITY not in d:
        return "", None
    dv, dv_ci = -d[VIOL]["mean"], d[VIOL]["ci"]  # paired holds oracle − PA
    dq, dq_ci = -d[QUALITY]["mean"], d[QUALITY]["ci"]
    text = (
        f"; paired PA − {oracle}: Δviol {100 * dv:+.2f} pp (CI {100 * (dv - dv_ci):+.2f}…{100 * (dv + dv_ci):+.2f}), "
        f"ΔQ {dq:+.4f} (CI {dq - dq_ci:+.4f}…{dq + dq_ci:+.4f})"
    )
    if not (math.isfinite(dv_ci) and math.isfinite(dq_ci)):
        return text, None
    viol_over = dv - dv_ci > G3_VIOL_TOL
    quality_under = dq + dq_ci < -(1 - G3_RATIO) * q_o
    return text, bool(viol_over or quality_under)


def _g4(key: str, w: dict) -> dict:
    v_pa, v_o = _m(w, REFERENCE, VIOL), _m(w, "oracle", VIOL)
    bound = G4_FACTOR * v_o + G4_ADD
    text = f"{key}: viol {_pp(v_pa)} vs bound 2 × {_pp(v_o)} + 1 pp = {_pp(bound)}"
    return {"workload": key, "ok": bool(v_pa <= bound), "margin": bound - v_pa, "text": text}


def format_goals(goals: list[dict], show: int = 8) -> str:
    """One verdict line per goal with its criterion, then the failing workloads (at most `show`), or the
    tightest one when it passes."""
    lines = []
    for g in goals:
        recs = g["records"]
        failed = [r for r in recs if not r["ok"]]
        counts = f"{len(recs) - len(failed)}/{len(recs)} workloads ok" if recs else "no workload to check"
        judged = [r["beyond_noise"] for r in failed if "beyond_noise" in r]
        if judged:
            counts += f"; {sum(judged)} of the {len(judged)} misses beyond seed noise (paired 95 % CI)"
        lines.append(f"{g['verdict']:4}  {g['goal']}: {g['criterion']} ({counts})")
        if failed:
            lines += [f"      FAIL {r['text']}" for r in failed[:show]]
            if len(failed) > show:
                lines.append(f"      … {len(failed) - show} more in sweep.json")
        elif recs:
            tight = min(recs, key=lambda r: r["margin"])
            lines.append(f"      tightest: {tight['text']}")
    return "\n".join(lines)
