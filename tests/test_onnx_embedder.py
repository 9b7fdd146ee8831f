"""Issue 16: the live path's ONNX Runtime encoder gives MiniLM's embeddings (scheduler/onnx_embedder.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from scheduler import onnx_embedder
from scheduler.embeddings import embed_texts
from tests.test_submit_path_routing import prompts


@pytest.mark.slow
def test_onnx_embeddings_match_torch_on_1000_prompts(one_torch_thread):
    texts = prompts(1000, seed=5) + ["", "x", "a " * 300]  # empty, one token, longer than the 256-token limit
    encoder = onnx_embedder.onnx_minilm()
    by_onnx = np.concatenate([encoder(texts[i : i + 1]) for i in range(len(texts))])  # one per call, as idle
    by_torch = np.concatenate([embed_texts(texts[i : i + 1]) for i in range(len(texts))])
    assert by_onnx.shape == by_torch.shape == (len(texts), 384) and by_onnx.dtype == np.float32
    assert np.abs(by_onnx - by_torch).max() < 1e-5
    assert np.sum(by_onnx * by_torch, axis=1).min() >= 1 - 1e-3
    batched = encoder(texts[:64])  # padded to the longest: the same vectors up to rounding
    assert np.abs(batched - by_onnx[:64]).max() < 1e-5


def test_the_exported_graph_is_reused_and_keyed_by_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_ONNX_CACHE", str(tmp_path))
    onnx_embedder.onnx_minilm()
    (graph,) = tmp_path.glob("minilm-*.onnx")
    mtime = graph.stat().st_mtime_ns
    onnx_embedder.onnx_minilm()
    assert list(tmp_path.glob("*")) == [graph] and graph.stat().st_mtime_ns == mtime  # loaded, not re-exported


def test_torch_can_be_forced(monkeypatch, one_torch_thread):  # the fixture restores the threads it sizes
    monkeypatch.setenv("T2I_EMBEDDER", "torch")
    assert onnx_embedder._choose_live_embedder() is embed_texts


LIGHT_PROCESS = """
import json, sys
from scheduler.onnx_embedder import live_embedder
vector = live_embedder()(["a red fox in the snow"])[0]
heavy = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
print(json.dumps({"vector": vector.tolist(), "heavy": heavy}))
"""


def test_a_process_with_the_graph_exported_embeds_without_loading_torch(tmp_path, monkeypatch):
    """A web process's warm-up (webapp/wsgi.py) after the first: ONNX Runtime and the tokenizers library only,
    and still the torch embedding."""
    monkeypatch.setenv("T2I_ONNX_CACHE", str(tmp_path))
    onnx_embedder.onnx_minilm()  # the first process exports
    out = subprocess.run([sys.executable, "-c", LIGHT_PROCESS], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["heavy"] == [], f"the live embedder loaded {answer['heavy']}"
    assert np.abs(np.array(answer["vector"]) - embed_texts(["a red fox in the snow"])[0]).max() < 1e-5
