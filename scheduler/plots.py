"""PNG plots over time, like the paper's evaluation figure (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {
    "prompt_aware": "tab:red",
    "clipper_ha": "tab:blue",
    "clipper_ht": "tab:cyan",
    "nirvana": "tab:green",
    "proteus": "tab:purple",
    "oracle": "tab:gray",
    "hindsight": "black",
}
EXTRA_COLORS = ("tab:orange", "tab:olive", "tab:pink", "tab:brown", "gold", "navy")  # names without a colour above


def _arr(x) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in x], dtype=float)


def plot_timeseries(series: dict[str, dict], path: str, title: str = "") -> None:
    """Load and on-time throughput, SLO violation ratio, quality and prompt_aware's K′ mix over time."""
    names = list(series)
    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    first = series[names[0]]
    t = np.asarray(first["t"])
    axes[0].fill_between(t, _arr(first["load"]), color="0.85", label="arrivals/s (load)")
    for n in names:
        c = COLORS.get(n)
        tn = np.asarray(series[n]["t"])
        axes[0].plot(tn, _arr(series[n]["throughput"]), label=n, color=c, lw=1.2)
        axes[1].plot(tn, _arr(series[n]["violation_ratio"]), label=n, color=c, lw=1.2)
        axes[2].plot(tn, _arr(series[n]["quality"]), label=n, color=c, lw=1.2)
    axes[0].set_ylabel("on-time req/s")
    axes[0].legend(ncol=4, fontsize=8, loc="upper right")
    axes[1].set_ylabel("SLO violation ratio")
    axes[1].set_ylim(-0.02, 1.02)
    axes[2].set_ylabel("mean quality Q")
    axes[2].axhline(0.9, color="k", ls=":", lw=0.8)
    pa = "prompt_aware" if "prompt_aware" in series else names[0]
    mix = series[pa]["k_prime_rate"]
    ks = sorted(mix, key=int)
    axes[3].stackplot(
        np.asarray(series[pa]["t"]),
        *[_arr(mix[k]) for k in ks],
        labels=[f"K′={k}" for k in ks],
        colors=plt.cm.viridis(np.linspace(0, 0.95, len(ks))),
    )
    axes[3].set_ylabel(f"{pa}: served req/s by K′")
    axes[3].legend(ncol=len(ks), fontsize=8, loc="upper right")
    axes[3].set_xlabel("simulated time (s)")
    if title:
        axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_kmix(series: dict[str, dict], path: str) -> None:
    """Served requests per second by K′ over time, one panel per policy."""
    names = list(series)
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.2 * len(names)), sharex=True, squeeze=False)
    for ax, n in zip(axes[:, 0], names):
        t = np.asarray(series[n]["t"])
        mix = series[n]["k_prime_rate"]
        ks = sorted(mix, key=int)
        ax.stackplot(
            t,
            *[_arr(mix[k]) for k in ks],
            labels=[f"K′={k}" for k in ks],
            colors=plt.cm.viridis(np.linspace(0, 0.95, len(ks))),
        )
        ax.set_ylabel(n, fontsize=9)
    axes[0, 0].legend(ncol=len(ks), fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("simulated time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


BOUND_PREFIXES = ("oracle", "hindsight")  # bounds, not baselines: drawn hollow


def plot_sweep(workloads: dict[str, dict], path: str) -> None:
    """The sweep on one page: a panel per workload (rows: trace × time scale, columns: peak load), each policy a
    point at its seed-mean SLO violations (x, symlog) and effective quality (y) with 95 % CI bars. Up and to the
    left is better, so a policy is dominated where another sits above and left of it; bounds are hollow."""
    rows = sorted({(w["trace"], w["time_scale"]) for w in workloads.values()}, key=lambda r: (r[0], -r[1]))
    loads = sorted({w["load"] for w in workloads.values()})
    fig, axes = plt.subplots(
        len(rows), len(loads), figsize=(3.2 * len(loads), 2.6 * len(rows)), squeeze=False, constrained_layout=True
    )
    extra = iter(EXTRA_COLORS)
    colors: dict[str, str] = {}
    for w in workloads.values():
        ax = axes[rows.index((w["trace"], w["time_scale"])), loads.index(w["load"])]
        for name, m in w["policies"].items():
            color = colors.setdefault(name, COLORS.get(name) or next(extra, "0.5"))
            viol, q = m["slo_violation_ratio"], m["effective_quality"]
            hollow = name.startswith(BOUND_PREFIXES)
            ax.errorbar(
                100 * viol["mean"], q["mean"], xerr=100 * _ci(viol), yerr=_ci(q), fmt="o", ms=5, capsize=2,
                color=color, mfc="none" if hollow else color, label=name,
            )  # fmt: skip
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(-0.03, max(1.0, 1.5 * ax.get_xlim()[1]))  # 0 % and the 100 % edge in view, a readable axis
        ax.set_title(f"{w['trace']} ×{w['time_scale']:g}, load {w['load']:g}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("SLO violations % (symlog)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("effective Q", fontsize=8)
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="outside upper center", ncol=min(8, len(handles)))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ci(stat: dict) -> float:
    """The 95 % CI half-width of a sweep statistic (0 where one seed leaves it undefined)."""
    ci = stat.get("ci", 0.0)
    return ci if ci is not None and np.isfinite(ci) else 0.0


def plot_policy_gap(workloads: dict[str, dict], a: str, b: str, path: str) -> None:
    """`python -m scheduler.policy_gap` on one page, laid out like the sweep's figure (rows: trace × time
    scale, columns: peak load). Each workload has two panels over arrival time, per bin (seed means): the
    arrivals per second, and A's violation excess over B (red bars, left axis) with B's quality edge over A
    (blue steps, right axis). Above zero is where A loses."""
    rows = sorted({(w["trace"], w["time_scale"]) for w in workloads.values()}, key=lambda r: (r[0], -r[1]))
    loads = sorted({w["load"] for w in workloads.values()})
    fig = plt.figure(figsize=(max(6.0, 4.8 * len(loads)), 3.6 * len(rows)), constrained_layout=True)
    grid = fig.add_gridspec(len(rows), len(loads))
    for w in workloads.values():
        cell = grid[rows.index((w["trace"], w["time_scale"])), loads.index(w["load"])].subgridspec(
            2, 1, height_ratios=(1, 1.4)
        )
        top = fig.add_subplot(cell[0])
        bottom = fig.add_subplot(cell[1], sharex=top)
        bins = w["bins"]
        width = bins["bin_s"]
        x = np.arange(len(bins["arrivals"])) * width
        top.bar(x, np.asarray(bins["arrivals"]) / width, width=width, align="edge", color="0.55")
        top.set_ylabel("arrivals / s", fontsize=7)
        top.set_title(f"{w['trace']} ×{w['time_scale']:g}, load {w['load']:g}", fontsize=9)
        top.tick_params(labelsize=7, labelbottom=False)
        bottom.bar(x, 100 * np.asarray(bins["viol_excess"]), width=width, align="edge", color="tab:red")
        bottom.axhline(0, color="black", lw=0.5)
        bottom.set_ylabel(f"viol. excess of {a} (pp)", fontsize=7, color="tab:red")
        bottom.set_xlabel("arrival time (s)", fontsize=7)
        quality = bottom.twinx()
        quality.step(x, np.asarray(bins["quality_edge"]), where="post", color="tab:blue", lw=0.9)
        for ax, values in ((bottom, 100 * np.asarray(bins["viol_excess"])), (quality, bins["quality_edge"])):
            reach = float(np.max(np.abs(values), initial=0.0)) * 1.1 or 1.0
            ax.set_ylim(-reach, reach)  # both axes symmetric: their zeros share one line
        quality.set_ylabel(f"quality edge of {b}", fontsize=7, color="tab:blue")
        for ax in (top, bottom, quality):
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
