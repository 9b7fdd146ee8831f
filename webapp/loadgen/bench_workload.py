"""Workload benchmark of approximate caching on the real stack (issue 4).

Reads two `manage.py loadgen` output folders made on the same prompts and arrivals — one with
ApproxC (e.g. policy `nirvana`: every request at its own K*) and one with every request at K = 0
(policy `clipper_ha`) — and prints the hit rate, the K* and K′ histograms and the mean service
time (finish − start, as recorded by the ledger) of each, with their ratio.

    python -m workers.bench_workload results/workload-approxc results/workload-k0
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

LEVELS = (0, 5, 10, 15, 20, 25)


def load(folder: Path) -> list[dict]:
    with open(folder / "requests.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["status"] == "succeeded"]


def summary(rows: list[dict]) -> dict:
    service = [float(r["finish"]) - float(r["start"]) for r in rows if r["start"] and r["finish"]]
    k_star = Counter(int(r["k_star"] or 0) for r in rows)
    k_prime = Counter(int(r["k_prime"] or 0) for r in rows)
    return {
        "served": len(rows),
        "hit_rate": sum(n for k, n in k_prime.items() if k > 0) / max(len(rows), 1),
        "k_star": k_star,
        "k_prime": k_prime,
        "service_mean_s": sum(service) / max(len(service), 1),
    }


def histogram(counts: Counter, total: int) -> str:
    return "  ".join(f"{k}:{100 * counts.get(k, 0) / max(total, 1):5.1f}%" for k in LEVELS)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("approxc", type=Path, help="loadgen --out folder of the ApproxC run")
    p.add_argument("baseline", type=Path, help="loadgen --out folder of the all-K=0 run")
    args = p.parse_args(argv)
    a, b = summary(load(args.approxc)), summary(load(args.baseline))
    print(f"{'run':<10} {'served':>6} {'hit rate':>9} {'mean service s':>15}   K* histogram (share of served)")
    for name, s in (("approxc", a), ("all K=0", b)):
        print(
            f"{name:<10} {s['served']:>6} {100 * s['hit_rate']:>8.1f}% {s['service_mean_s']:>15.3f}   "
            f"{histogram(s['k_star'], s['served'])}"
        )
    print(f"K' served (approxc): {histogram(a['k_prime'], a['served'])}")
    print(f"mean service time approxc / all-K=0: {a['service_mean_s'] / max(b['service_mean_s'], 1e-9):.3f}")


if __name__ == "__main__":
    main()
