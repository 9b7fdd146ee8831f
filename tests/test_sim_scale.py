"""Issue 14, internet scale: synthesised prompt streams and the lineage neighbour lists (no model, no data)."""

from __future__ import annotations

import numpy as np

from scheduler.bench_scale import bursty_arrivals, shadow_k_star_agreement, synthetic_stream
from scheduler.neighbour_index import exact_lists, lineage_lists
from scheduler.prompt_stream import extend_stream, nearest_predecessors
from tests.sim_helpers import cfg

THRESHOLDS = [0.65, 0.75, 0.85, 0.90, 0.95]  # NIRVANA's: s → K* class 0…5


def _k_mix(s: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(THRESHOLDS, s, side="right"), minlength=6) / s.size


def test_a_stream_that_fits_in_the_file_is_the_file():
    base = synthetic_stream(300)
    stream = extend_stream(base, 200, seed=3)
    assert not stream.synthetic and np.array_equal(stream.embeddings, base[:200])


def test_synthesis_is_seeded_and_keeps_the_k_star_mix():
    base = synthetic_stream(1500, seed=2)
    a, b = extend_stream(base, 6000, seed=5), extend_stream(base, 6000, seed=5)
    assert np.array_equal(a.embeddings, b.embeddings) and a.synthetic
    assert np.array_equal(a.embeddings[:1500], base)
    assert not np.array_equal(a.embeddings, extend_stream(base, 6000, seed=6).embeddings)
    assert np.allclose(np.linalg.norm(a.embeddings, axis=1), 1.0, atol=1e-5)
    file_s, _ = nearest_predecessors(base)
    synth_s, _ = nearest_predecessors(a.embeddings)
    gap = np.abs(_k_mix(synth_s[1499:]) - _k_mix(file_s))
    assert gap.max() < 0.03, (_k_mix(synth_s[1499:]), _k_mix(file_s))


def test_lineage_lists_find_the_exact_nearest_predecessor():
    stream = extend_stream(synthetic_stream(1000, seed=4), 5000, seed=1)
    exact = exact_lists(stream.embeddings, 300, 32)
    lineage = lineage_lists(stream.embeddings, stream.parent, stream.n_file, 300, 32)
    assert not lineage.exhaustive
    top_exact = np.maximum(exact.warm_sim[:, 0], exact.req_sim[:, 0])
    top_lineage = np.maximum(lineage.warm_sim[:, 0], lineage.req_sim[:, 0])
    assert np.all(top_lineage <= top_exact + 1e-5)  # lineage candidates are real predecessors
    k_exact = np.searchsorted(THRESHOLDS, top_exact, side="right")
    k_lineage = np.searchsorted(THRESHOLDS, top_lineage, side="right")
    assert (k_exact == k_lineage).mean() >= 0.99
    # the file's replayed rows keep their exact lists
    assert np.array_equal(exact.req_idx[:700, :5], lineage.req_idx[:700, :5])


def _shadow_agreement(policy: str) -> float:
    stream = extend_stream(synthetic_stream(800, seed=7), 4800, seed=2)
    config = cfg(16)
    arrivals = bursty_arrivals(4500, 0.8 * config.top_level_capacity())
    return shadow_k_star_agreement(stream, 300, config, policy, arrivals)


def test_lineage_k_star_agrees_with_exact_search_on_simulated_lookups():
    """On the same cache state, K* from the lineage lists = exact K* on most lookups. This fixture (tight topic
    clusters, many cousins outside a prompt's lineage) is harsher than MiniLM on DiffusionDB, where the
    agreement measured 99.77 % / 99.67 % (docs/results.md, *Internet scale*); here it is 96.9–98.4 %."""
    for policy in ("prompt_aware", "proteus"):
        assert _shadow_agreement(policy) >= 0.96, policy
