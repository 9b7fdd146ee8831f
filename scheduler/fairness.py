"""Per-user fairness in the simulator (issue 13 item 7): who sent each arrival, and how evenly users fared.

A trace has arrival times but no users. `assign_owners` gives every arrival an owner, seeded and
reproducible, with the heavy-tailed request count per user that multi-user services see (a few heavy
users send most requests, most users send a few):

* a fixed population of `n_users` users (default 100); user u (0-based rank) has weight
  1 / (u + 1) ** `zipf_s` (a Zipf law, default exponent 1.1): with the defaults user 0 sends ~23 % of the
  requests, the top 10 users ~63 %, and the bottom half ~11 %;
* sessions: with probability `repeat` (default 0.5) an arrival belongs to the same user as the arrival
  before it, otherwise to a fresh Zipf draw. Runs of one user's requests (mean length 1 / (1 − repeat)
  = 2 by default; longer for heavy users, who are drawn again more often) model a user who submits
  several prompts at once. The per-user share stays the Zipf law above: a copy of a Zipf-distributed
  owner is Zipf-distributed;
* the random stream is `numpy.random.default_rng([seed, 0xFA1])`, independent of the simulator's own
  use of the same seed. Same (n, n_users, zipf_s, repeat, seed) ⇒ the same owners, on any machine.

`user_metrics` and `fairness_summary` then work post hoc on a run's per-request arrays (arrival,
deadline, finish; NaN finish = dropped), so any simulator run (a SimResult) or a live load-generator run
can be scored without touching the simulator. The simulator's workers stay FIFO: it does not model
the live system's round-robin claim order (webapp/ledger/transitions.claim_batch) or priority classes,
so these numbers say how unevenly a FIFO policy treats users under this assignment.

Metrics (DESIGN §7 definitions, per user; dropped requests violate and have no latency):

* per-user p99 and mean end-to-end latency of served requests, violation ratio, on-time ratio;
* Jain's fairness index J(x) = (Σ x)² / (n · Σ x²) over users: 1 when every user has the same value,
  1/n when one user has everything and the rest nothing. Taken over per-user on-time ratios and over
  per-user mean latency. Users with fewer than `min_requests` requests (default 5) are left out of the
  summary statistics: a user with one request has an on-time ratio of 0 or 1, which says nothing.
"""

from __future__ import annotations

import numpy as np

DEFAULT_USERS = 100
DEFAULT_ZIPF_S = 1.1
DEFAULT_REPEAT = 0.5
DEFAULT_MIN_REQUESTS = 5
DEFAULT_TENANTS = 10
_STREAM = 0xFA1  # the second key of the owner stream: keeps it apart from other users of `seed`

# The keys `fairness_summary` adds to a run's metrics: simulator-only (its owners are a synthetic assignment;
# a live replay sends everything as one user).
FAIRNESS_KEYS: tuple[str, ...] = (
    "users",
    "users_counted",
    "top_user_share",
    "jain_on_time",
    "jain_mean_latency",
    "user_p99_latency_max_s",
    "user_p99_latency_median_s",
    "user_violation_max",
    "user_violation_spread",
)
# Columns a results table may add (key, header, format), like scheduler.metrics.TABLE_COLUMNS.
FAIRNESS_COLUMNS: list[tuple[str, str, str]] = [
    ("jain_on_time", "Jain on-time", "{:.4f}"),
    ("user_p99_latency_max_s", "worst user p99 s", "{:.2f}"),
    ("user_violation_max", "worst user viol.", "{:.2%}"),
]


def zipf_weights(n_users: int = DEFAULT_USERS, zipf_s: float = DEFAULT_ZIPF_S) -> np.ndarray:
    """Share of requests of each user rank (sums to 1)."""
    if n_users < 1:
        raise ValueError("n_users must be at least 1")
    if zipf_s < 0:
        raise ValueError("zipf_s must be non-negative (0 = every user equally likely)")
    w = 1.0 / np.arange(1, n_users + 1, dtype=float) ** zipf_s
    return w / w.sum()


def assign_owners(
    n_requests: int,
    n_users: int = DEFAULT_USERS,
    zipf_s: float = DEFAULT_ZIPF_S,
    repeat: float = DEFAULT_REPEAT,
    seed: int = 0,
) -> np.ndarray:
    """The owner (user rank, 0 = heaviest) of each of `n_requests` arrivals in arrival order; see the
    module docstring for the model."""
    if not 0.0 <= repeat < 1.0:
        raise ValueError("repeat must lie in [0, 1)")
    rng = np.random.default_rng([int(seed), _STREAM])
    fresh = rng.choice(n_users, size=n_requests, p=zipf_weights(n_users, zipf_s))
    same = rng.random(n_requests) < repeat
    if n_requests:
        same[0] = False
    # Each arrival takes the owner of the latest arrival at or before it that drew a fresh owner.
    last_fresh = np.maximum.accumulate(np.where(same, 0, np.arange(n_requests)))
    return fresh[last_fresh].astype(np.int64)


def tenants_of(owners: np.ndarray, n_tenants: int = DEFAULT_TENANTS) -> np.ndarray:
    """The tenant of each request: its owner's rank modulo `n_tenants`, so every tenant holds a mix of heavy
    and light users (rank 0, the heaviest, is in tenant 0 with ranks 10, 20, … at the default 10 tenants)."""
    if n_tenants < 1:
        raise ValueError("n_tenants must be at least 1")
    return np.asarray(owners, dtype=np.int64) % int(n_tenants)


def jain_index(values) -> float:
    """Jain's fairness index of non-negative values: (Σx)² / (n·Σx²); 1.0 for no values or all zero
    (nobody is treated differently), NaN values ignored."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 1.0
    if (x < 0).any():
        raise ValueError("Jain's index needs non-negative values")
    sq = float(np.sum(x * x))
    if sq == 0.0:
        return 1.0
    return float(np.sum(x) ** 2 / (x.size * sq))


def user_metrics(arrival, deadline, finish, owners) -> dict[str, np.ndarray]:
    """Per-user arrays, one entry per user that sent at least one request (sorted by user id):
    `user`, `requests`, `served`, `on_time_ratio`, `violation_ratio`, `mean_latency_s`, `p99_latency_s`
    (latencies NaN for a user with nothing served)."""
    arrival, deadline, finish = (np.asarray(a, dtype=float) for a in (arrival, deadline, finish))
    owners = np.asarray(owners)
    if not arrival.shape == deadline.shape == finish.shape == owners.shape:
        raise ValueError("arrival, deadline, finish and owners must have one entry per request")
    served = np.isfinite(finish)
    on_time = served & (finish <= deadline + 1e-9)  # the tolerance of scheduler.metrics.summarize
    latency = finish - arrival
    users, inverse = np.unique(owners, return_inverse=True)
    requests = np.bincount(inverse, minlength=users.size)
    n_served = np.bincount(inverse, weights=served, minlength=users.size)
    n_on_time = np.bincount(inverse, weights=on_time, minlength=users.size)
    lat_sum = np.bincount(inverse, weights=np.where(served, latency, 0.0), minlength=users.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_latency = np.where(n_served > 0, lat_sum / np.maximum(n_served, 1), np.nan)
    p99 = np.full(users.size, np.nan)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(requests)])
    for i in range(users.size):
        idx = order[bounds[i] : bounds[i + 1]]
        lat = latency[idx][served[idx]]
        if lat.size:
            p99[i] = float(np.percentile(lat, 99))
    on_time_ratio = n_on_time / requests
    return {
        "user": users,
        "requests": requests,
        "served": n_served.astype(np.int64),
        "on_time_ratio": on_time_ratio,
        "violation_ratio": 1.0 - on_time_ratio,
        "mean_latency_s": mean_latency,
        "p99_latency_s": p99,
    }


def fairness_summary(arrival, deadline, finish, owners, min_requests: int = DEFAULT_MIN_REQUESTS) -> dict:
    """Scalar fairness metrics of one run over the users with at least `min_requests` requests:
    Jain's index over their on-time ratios and over their mean latencies, the worst and median user's
    p99 latency, the worst user's violation ratio and the spread (worst − best), how many users counted,
    and the heaviest user's share of all requests."""
    per = user_metrics(arrival, deadline, finish, owners)
    keep = per["requests"] >= min_requests
    total = int(per["requests"].sum())
    viol = per["violation_ratio"][keep]
    p99 = per["p99_latency_s"][keep]
    p99 = p99[np.isfinite(p99)]
    return {
        "users": int(per["user"].size),
        "users_counted": int(keep.sum()),
        "top_user_share": float(per["requests"].max() / total) if total else 0.0,
        "jain_on_time": jain_index(per["on_time_ratio"][keep]),
        "jain_mean_latency": jain_index(per["mean_latency_s"][keep]),
        "user_p99_latency_max_s": float(p99.max()) if p99.size else float("nan"),
        "user_p99_latency_median_s": float(np.median(p99)) if p99.size else float("nan"),
        "user_violation_max": float(viol.max()) if viol.size else 0.0,
        "user_violation_spread": float(viol.max() - viol.min()) if viol.size else 0.0,
    }


def add_fairness_metrics(metrics: dict, run, owners, min_requests: int = DEFAULT_MIN_REQUESTS) -> dict:
    """Add `fairness_summary` of a run to its metrics dict (in place; also returned). `run` is anything
    with per-request arrays `arrival`, `deadline` and `finish` (a simulator SimResult, say)."""
    metrics.update(fairness_summary(run.arrival, run.deadline, run.finish, owners, min_requests))
    return metrics
