"""`python -m scheduler.policy_gap`: where in time one policy loses to another. The sweep's workloads and
seeds, two policies (by default prompt_aware against the oracle), and the difference in SLO violations and
in effective quality split over arrival-time bins, so that a gap can be traced to the moments it comes from:
a burst's onset, its end, steady load.

Example (the G3 analysis in docs/results.md; quote the spec as for the sweep):

    python -m scheduler.policy_gap \\
        --traces alibaba=../shared/data/traces/alibaba_gentd26_t2i/lora_request_trace.csv \\
        --prompts ../shared/data/prompts/diffusiondb_2m_first_4k.txt --warm 1000 \\
        --loads 2.0 --time-scales 6.5 --seeds 10 --workers 16 --profile sdxl-a100 --out results/gap

The workloads, seeds and simulator settings are the sweep's (`python -m scheduler.sweep --help`; its goal
flags `--g2-load` and `--compressed` are ignored here). `--policies A,B` names the two policies: the gap
traced is A's excess of violations over B's and B's edge in quality over A's.

The split is exact. Requests are binned by arrival time (`--bin` seconds), and for each unit (workload and
seed), with n requests of which N_X were served by policy X:
* violations: the bins' (v_A,b − v_B,b) / n add up to viol(A) − viol(B), v_X,b being bin b's requests that
  X did not serve on time (late or dropped);
* effective quality (the mean over served requests): the bins' S_B,b / N_B − S_A,b / N_A add up to
  Q(B) − Q(A), S_X,b being the quality summed over bin b's requests that X served.

Each bin is labelled twice by how the arrivals change, with c = `--change`: *into* it (its arrivals against
the bin before) and *out of* it (the next bin's against its own): rising (more than 1 + c times), falling
(less than 1 − c times) or steady; a missing neighbour counts as no arrivals. The report gives, per label,
the seed mean of the gap's part in those bins with its 95 % CI, and the bins that carry most of it (bins
line up across seeds: a seed moves each arrival by about one gap). DIR/policy_gap.json holds every number;
DIR/policy_gap.png plots, per workload, the arrivals and both gaps per bin.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from . import sweep
from .metrics import _clean, _json_default
from .plots import plot_policy_gap
from .policies import is_sim_policy
from .simulator import SimResult
from .sweep_stats import mean_ci, workload_key

LABELS = ("rising", "steady", "falling")


def build_parser() -> argparse.ArgumentParser:
    """The sweep's parser (its workloads, seeds and simulator flags), two policies and the bins."""
    p = sweep.build_parser()
    p.prog = "python -m scheduler.policy_gap"
    p.description, p.epilog = __doc__.split("\n\n")[0], __doc__.split("\n\n", 1)[1]
    p.add_argument("--bin", type=sweep._positive, default=10.0, help="bin width, seconds of arrival time")
    p.add_argument("--change", type=sweep._positive, default=0.3, help="relative change of arrivals that is not steady")
    p.add_argument("--top", type=sweep._positive_count, default=5, help="bins listed per gap")
    p.set_defaults(policies="prompt_aware,oracle", out="results/policy_gap")
    for action in p._actions:
        if "--policies" in action.option_strings:
            action.help = "A,B: two simulator policies; the gap traced is A's violation excess and B's quality edge"
    return p


# ------------------------------------------------------------------------------------------ the split


def bin_gap(a: SimResult, b: SimResult, bin_s: float) -> dict[str, np.ndarray]:
    """Per arrival bin: its arrivals, A's violation excess over B and B's quality edge over A (see the module
    docstring; each adds up over the bins to the difference of the summary metrics)."""
    arrival = a.arrival
    index = (arrival // bin_s).astype(np.int64)
    n_bins = int(index.max()) + 1 if arrival.size else 0
    n = max(arrival.size, 1)

    def per_bin(weights: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=weights.astype(np.float64), minlength=n_bins)

    def late(r: SimResult) -> np.ndarray:
        served = np.isfinite(r.finish)
        return ~(served & (r.finish <= r.deadline + 1e-9))  # as metrics.summarize counts a violation

    def quality_share(r: SimResult) -> np.ndarray:
        served = np.isfinite(r.finish)
        return per_bin(np.where(served, r.quality, 0.0)) / max(int(served.sum()), 1)

    return {
        "start_s": np.arange(n_bins) * bin_s,
        "arrivals": per_bin(np.ones(arrival.size)),
        "viol_excess": (per_bin(late(a)) - per_bin(late(b))) / n,
        "quality_edge": quality_share(b) - quality_share(a),
    }


def label_bins(arrivals: np.ndarray, change: float) -> dict[str, np.ndarray]:
    """Each bin's label `into` it (against the bin before) and `out of` it (the next bin against it)."""
    before = np.r_[0.0, arrivals[:-1]]
    after = np.r_[arrivals[1:], 0.0]

    def label(new: np.ndarray, old: np.ndarray) -> np.ndarray:
        out = np.full(new.shape, "steady", dtype=object)
        out[new > (1 + change) * old] = "rising"
        out[new < (1 - change) * old] = "falling"
        return out

    return {"into": label(arrivals, before), "out of": label(after, arrivals)}


# ------------------------------------------------------------------------------------------- running


def _gap_unit(item: tuple[int, sweep.Unit]) -> tuple[int, dict]:
    """One unit's two runs and their bins (in a `sweep.map_units` process: its inputs are `sweep._SHARED`)."""
    index, unit = item
    sh = sweep._SHARED
    a, b = sh["policies"]
    runs, results, _ = sweep.simulate_unit(unit, sh, [a, b])
    bins = bin_gap(runs[a], runs[b], sh["bin_s"])
    totals = {
        p: {"viol": results[p]["slo_violation_ratio"], "quality": results[p]["effective_quality"]} for p in (a, b)
    }
    return index, {"totals": totals, "bins": bins}


# --------------------------------------------------------------------------------------- aggregation


def summarise_workload(per_seed: list[dict], a: str, b: str, bin_s: float, change: float, top: int) -> dict:
    """Over a workload's seeds: the totals, the gap by bin label (mean and 95 % CI of each seed's part), and
    the bins carrying most of each gap (seed means, bins aligned by index)."""
    viol_gap = [s["totals"][a]["viol"] - s["totals"][b]["viol"] for s in per_seed]
    q_gap = [s["totals"][b]["quality"] - s["totals"][a]["quality"] for s in per_seed]
    out: dict = {
        "seeds": len(per_seed),
        "totals": {p: {m: mean_ci([s["totals"][p][m] for s in per_seed]) for m in ("viol", "quality")} for p in (a, b)},
        "viol_excess": mean_ci(viol_gap),
        "quality_edge": mean_ci(q_gap),
        "by_label": {},
    }
    labels = [label_bins(s["bins"]["arrivals"], change) for s in per_seed]
    for kind in ("into", "out of"):
        rows = {}
        for lab in LABELS:
            parts = {"viol_excess": [], "quality_edge": [], "requests": []}
            for s, labelled in zip(per_seed, labels, strict=True):
                mask = labelled[kind] == lab
                for gap in ("viol_excess", "quality_edge"):
                    parts[gap].append(float(s["bins"][gap][mask].sum()))
                parts["requests"].append(float(s["bins"]["arrivals"][mask].sum() / max(s["bins"]["arrivals"].sum(), 1)))
            rows[lab] = {k: mean_ci(v) for k, v in parts.items()}
        out["by_label"][kind] = rows
    width = max(len(s["bins"]["arrivals"]) for s in per_seed)

    def seed_mean(key: str) -> np.ndarray:
        return np.mean([np.pad(s["bins"][key], (0, width - len(s["bins"][key]))) for s in per_seed], axis=0)

    out["bins"] = {"bin_s": bin_s, **{k: seed_mean(k) for k in ("arrivals", "viol_excess", "quality_edge")}}
    out["top"] = {gap: [int(i) for i in np.argsort(-out["bins"][gap])[:top]] for gap in ("viol_excess", "quality_edge")}
    return out


# ------------------------------------------------------------------------------------------- printing


def format_workload(key: str, w: dict, a: str, b: str) -> str:
    """The workload's totals, its gap by bin label and its heaviest bins, as text."""
    ta, tb = w["totals"][a], w["totals"][b]
    v, q = w["viol_excess"], w["quality_edge"]
    lines = [
        f"{key} · {a} against {b} · {w['seeds']} seeds · bins of {w['bins']['bin_s']:g} s",
        f"  violations: {a} {100 * ta['viol']['mean']:.2f} % − {b} {100 * tb['viol']['mean']:.2f} % = {_pp(v)} pp",
        f"  eff. quality: {b} {tb['quality']['mean']:.4f} − {a} {ta['quality']['mean']:.4f} = {_q(q)}",
    ]
    rows = [["bins", "label", "requests %", "viol. excess pp", "share", "quality edge", "share"]]
    for kind, rows_by_label in w["by_label"].items():
        for lab, r in rows_by_label.items():
            rows.append(
                [
                    f"by the change {kind} them" if lab == LABELS[0] else "",
                    lab,
                    f"{100 * r['requests']['mean']:.1f}",
                    _pp(r["viol_excess"]),
                    _share(r["viol_excess"], v),
                    _q(r["quality_edge"]),
                    _share(r["quality_edge"], q),
                ]
            )
    lines += ["  " + line for line in sweep._render(rows, left={0, 1}).splitlines()]
    bins, width = w["bins"], w["bins"]["bin_s"]
    for gap, name, fmt in (("viol_excess", "violation excess", _pp_value), ("quality_edge", "quality edge", _q_value)):
        total = v if gap == "viol_excess" else q
        heavy = [
            f"{i * width:g}–{(i + 1) * width:g} s ({bins['arrivals'][i] / width:.1f} req/s): {fmt(bins[gap][i])}"
            + (f" ({100 * bins[gap][i] / total['mean']:.0f} %)" if _beyond_noise(total) else "")
            for i in w["top"][gap]
        ]
        lines.append(f"  heaviest bins of the {name}: " + "; ".join(heavy))
    return "\n".join(lines)


def _pp_value(x: float) -> str:
    return f"{100 * x:+.2f} pp"


def _q_value(x: float) -> str:
    return f"{x:+.4f}"


def _pp(stat: dict) -> str:
    ci = f" (CI {100 * (stat['mean'] - stat['ci']):+.2f}…{100 * (stat['mean'] + stat['ci']):+.2f})"
    return f"{100 * stat['mean']:+.2f}" + (ci if math.isfinite(stat["ci"]) else "")


def _q(stat: dict) -> str:
    ci = f" (CI {stat['mean'] - stat['ci']:+.4f}…{stat['mean'] + stat['ci']:+.4f})"
    return f"{stat['mean']:+.4f}" + (ci if math.isfinite(stat["ci"]) else "")


def _share(part: dict, total: dict) -> str:
    """The part's seed mean as a % of the total's; blank unless the total is a gap beyond seed noise (its CI
    above 0), where a share would divide by noise."""
    return f"{100 * part['mean'] / total['mean']:.0f} %" if _beyond_noise(total) else ""


def _beyond_noise(stat: dict) -> bool:
    return stat["mean"] > 0 and (not math.isfinite(stat["ci"]) or stat["mean"] - stat["ci"] > 0)


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        specs = [sweep.parse_trace_spec(s) for s in args.traces]
        loads, scales = sweep._floats(args.loads), sweep._floats(args.time_scales)
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        if len(policies) != 2 or not all(is_sim_policy(p) for p in policies):
            raise ValueError(f"--policies takes two simulator policies A,B, not {args.policies!r}")
    except ValueError as exc:
        print(f"policy_gap: {exc}", file=sys.stderr)
        return 2
    a, b = policies
    m = sweep.setup_matrix(args, specs, loads, scales, policies)
    shared = {**m.shared, "bin_s": args.bin}
    results = sweep.map_units(_gap_unit, m.units, shared, max(1, args.jobs), desc="policy gap")
    grouped: dict[str, list[dict]] = {}
    where: dict[str, dict] = {}
    for unit, result in zip(m.units, results, strict=True):
        key = workload_key(unit.trace, unit.load, unit.time_scale)
        grouped.setdefault(key, []).append(result)
        where[key] = {"trace": unit.trace, "load": unit.load, "time_scale": unit.time_scale}
    workloads = {
        k: {**where[k], **summarise_workload(seeds, a, b, args.bin, args.change, args.top)}
        for k, seeds in grouped.items()
    }
    for note in m.notes:
        print(f"note: {note}")
    for key, w in workloads.items():
        print(format_workload(key, w, a, b))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "policy_gap.json")
    doc = {"policies": [a, b], "bin_s": args.bin, "change": args.change, "seeds": m.seeds, "workloads": workloads}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(_clean(doc), fh, indent=1, allow_nan=False, default=_json_default)
    figure = os.path.join(args.out, "policy_gap.png")
    plot_policy_gap(workloads, a, b, figure)
    print(f"wrote {path} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
