"""The sweep's statistics: per workload, policy and metric the mean over seeds with its 95 % CI, and the
paired per-seed differences of every policy to prompt_aware (`python -m scheduler.sweep`, issue 13 item 8)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

REFERENCE = "prompt_aware"  # the policy every other is paired with
VIOL, QUALITY = "slo_violation_ratio", "effective_quality"


def flatten_metrics(summary: dict) -> dict[str, float]:
    """The numbers of a summary; nested dicts (k_prime_mix) as `name.key`."""
    flat: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": float(v) for k, v in value.items() if _is_number(v)})
        elif _is_number(value):
            flat[key] = float(value)
    return flat


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def mean_ci(values, confidence: float = 0.95) -> dict:
    """Mean, sample s.d., n and the CI half-width (Student t, n − 1 d.o.f.) of the finite values;
    the half-width is NaN below two values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return {"mean": math.nan, "ci": math.nan, "sd": math.nan, "n": 0}
    sd = float(v.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": float(v.mean()), "ci": half, "sd": sd, "n": n}


def workload_key(trace: str, load: float, time_scale: float) -> str:
    return f"{trace} load {load:g} x{time_scale:g}"


def aggregate(cells: list[dict]) -> dict[str, dict]:
    """Per workload (in first-seen order): per policy and metric `mean_ci` over seeds, and the paired
    per-seed differences policy − prompt_aware (`paired`)."""
    grouped: dict[str, dict] = {}
    for c in cells:
        key = workload_key(c["trace"], c["load"], c["time_scale"])
        w = grouped.setdefault(key, {"trace": c["trace"], "load": c["load"], "time_scale": c["time_scale"], "raw": {}})
        w["raw"].setdefault(c["policy"], {})[c["seed"]] = c["metrics"]
    out: dict[str, dict] = {}
    for key, w in grouped.items():
        raw = w.pop("raw")
        w["policies"] = {
            p: {m: mean_ci([by_seed[s].get(m) for s in by_seed]) for m in _metric_names(by_seed)}
            for p, by_seed in raw.items()
        }
        ref = raw.get(REFERENCE)
        w["paired"] = {}
        if ref is not None:
            for p, by_seed in raw.items():
                if p == REFERENCE:
                    continue
                common = [s for s in by_seed if s in ref]
                w["paired"][p] = {
                    m: mean_ci([_diff(by_seed[s].get(m), ref[s].get(m)) for s in common])
                    for m in _metric_names(by_seed)
                }
        out[key] = w
    return out


def _metric_names(by_seed: dict) -> list[str]:
    names: dict[str, None] = {}
    for metrics in by_seed.values():
        names.update(dict.fromkeys(metrics))
    return list(names)


def _diff(a, b) -> float:
    return a - b if a is not None and b is not None else math.nan
