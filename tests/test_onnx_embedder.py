"""Issue 16: the live path's ONNX Runtime encoder (scheduler/onnx_embedder.py): its exported graph, the process it
runs in, and the torch fallback. That it gives torch's embeddings, on 1,003 prompts, is in
tests/test_submit_path_routing.py, which shares the torch reference."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from scheduler import onnx_embedder
from scheduler.embeddings import embed_texts


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
