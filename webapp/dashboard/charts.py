"""Server-side charts: matplotlib's Agg canvas straight to PNG bytes (no pyplot global state, no
browser-side library, no CDN). Each chart is one small figure fed by `metrics_queries`."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # headless; must precede any backend use

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from webapp.ledger.queues import gpu_queue

from . import metrics_queries as mq  # noqa: E402

SIZE = (8.0, 2.6)
DPI = 100


def _figure(title: str) -> tuple[Figure, object]:
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
    return fig, ax


def _time_axis(ax, w: mq.Window) -> None:
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlim(w.start, w.end)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _nan(values):
    return [math.nan if v is None else v for v in values]


def rates(w: mq.Window) -> bytes:
    ts = mq.time_series(w)
    fig, ax = _figure(f"Arrivals and on-time throughput (req/s, {w.step:g} s buckets, UTC)")
    ax.step(ts["t"], ts["arrival_rate"], where="post", label="arrival rate", color="#1f77b4")
    ax.step(ts["t"], ts["on_time_throughput"], where="post", label="on-time throughput", color="#2ca02c")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left")
    _time_axis(ax, w)
    return _png(fig)


def violations(w: mq.Window) -> bytes:
    ts = mq.time_series(w)
    fig, ax = _figure("SLO violation ratio by arrival time (decided requests)")
    ratio = [100 * v if v is not None else math.nan for v in ts["violation_ratio"]]
    width = w.step / 86400.0  # bar width in days (matplotlib date units)
    ax.bar(ts["t"], ratio, width=width, align="edge", color="#d62728")
    # Buckets with decided requests get a marker, so "0 %" differs from "no requests".
    centres = [t + (w.end - w.start) / (2 * mq.BUCKETS) for t in ts["t"]]
    ax.plot(centres, ratio, linestyle="none", marker="o", markersize=3, color="#7f0000")
    decided, violated = sum(ts["decided"]), sum(ts["violations"])
    if decided:
        overall = 100 * violated / decided
        ax.axhline(overall, linestyle="--", linewidth=1, color="#555", label=f"window: {overall:.1f}% of {decided}")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(0, 100)
    ax.set_ylabel("%", fontsize=8)
    _time_axis(ax, w)
    return _png(fig)


def quality(w: mq.Window) -> bytes:
    ts = mq.time_series(w)
    fig, ax = _figure("Effective quality of served requests, by finish time")
    ax.plot(ts["t"], _nan(ts["quality"]), marker=".", color="#9467bd")
    known = [q for q in ts["quality"] if q is not None]
    ax.set_ylim(min([0.5] + known) - 0.02, 1.01)
    _time_axis(ax, w)
    return _png(fig)


def mix(w: mq.Window) -> bytes:
    ms = mq.mix_series(w)
    fig, ax = _figure("Per-K′ mix of arrivals (share of each bucket)")
    totals = [sum(ms["counts"][k][i] for k in ms["levels"]) for i in range(mq.BUCKETS)]
    bottom = [0.0] * mq.BUCKETS
    width = w.step / 86400.0
    for k in ms["levels"]:
        share = [(c / t if t else 0.0) for c, t in zip(ms["counts"][k], totals)]
        ax.bar(ms["t"], share, width=width, bottom=bottom, align="edge", label=f"K′={k}")
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_ylim(0, 1)
    if ms["levels"]:
        ax.legend(fontsize=7, loc="upper left", ncols=min(6, len(ms["levels"])))
    _time_axis(ax, w)
    return _png(fig)


def queues(w: mq.Window) -> bytes:
    qs = mq.queue_series(w)
    fig, ax = _figure("Waiting requests per worker (queued, not started)")
    for worker in qs["workers"]:
        ax.plot(qs["t"], qs["depth"][worker], label=gpu_queue(worker), linewidth=1)
    ax.set_ylim(bottom=0)
    if len(qs["workers"]) <= 16:
        ax.legend(fontsize=6, loc="upper left", ncols=8)
    _time_axis(ax, w)
    return _png(fig)


CHARTS: dict[str, Callable[[mq.Window], bytes]] = {
    "rates": rates,
    "violations": violations,
    "quality": quality,
    "mix": mix,
    "queues": queues,
}
