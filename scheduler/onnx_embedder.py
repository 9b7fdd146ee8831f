"""The live path's prompt encoder: the same MiniLM run by ONNX Runtime instead of torch.

A web process embeds one prompt (or a small batch) per submit. Torch spends most of that on framework
dispatch around a tiny model: one prompt costs 15 ms of CPU with torch and 7 ms with ONNX Runtime on this
machine (docs/submit_path.md, "Round 3"). The graph is exported once from the packaged sentence-transformers
model (`scheduler.embeddings`) with torch's own exporter and kept under `.cache/onnx/`, keyed by a digest of
the weights and of the exporter's inputs; every process after the first loads the file.

The embedding is the torch one up to float rounding (max |Δ| ~2e-7, as between batch sizes): same tokenizer,
same weights, mean pooling over the attention mask and L2 normalisation done here exactly as
sentence-transformers does. tests/test_onnx_embedder.py checks 1,000 prompts against `embed_texts`, and
tests/test_submit_path_routing.py that routing decides the same. The simulator keeps `embed_texts` (its
cached prompt-file embeddings stay bit-for-bit what they were).

Without onnxruntime, or if the export fails, `live_embedder()` falls back to `embed_texts` with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .embeddings import EMBED_DIM, embed_texts, sentence_model, unit_rows

log = logging.getLogger(__name__)

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_LOCK = threading.Lock()
_LIVE: Callable[[list[str]], np.ndarray] | None = None


def cache_dir() -> Path:
    """Where exported graphs are kept (T2I_ONNX_CACHE, default `.cache/onnx` under the working directory)."""
    return Path(os.environ.get("T2I_ONNX_CACHE", Path(".cache") / "onnx"))


def _weights_digest(model) -> str:
    """A digest of the encoder's weights and the export settings: a new model or opset gets a new file."""
    h = hashlib.sha256(f"opset={OPSET};max_len={model.max_seq_length}".encode())
    for name, tensor in sorted(model[0].auto_model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def export_minilm(model, path: Path) -> None:
    """Export the encoder's transformer (token embeddings out) to `path`, atomically."""
    import torch

    class _TokenEmbeddings(torch.nn.Module):  # keyword call: the transformer's positional order is not stable
        def __init__(self, bert) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = model.tokenizer(["a photo of a cat", "hi"], padding=True, return_tensors="pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "token_embeddings")}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on ops it rewrites; the output is checked in tests
        torch.onnx.export(
            _TokenEmbeddings(model[0].auto_model.eval()),
            tuple(sample[name] for name in INPUTS),
            str(tmp),
            input_names=list(INPUTS),
            output_names=["token_embeddings"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    os.replace(tmp, path)  # a concurrent process never loads a half-written file


class OnnxMiniLM:
    """`embed_texts`' contract (float32, L2-normalised, (n, 384)) computed by an ONNX Runtime session."""

    def __init__(self, model, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # as the web process's torch threads (webapp/wsgi.py)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = model.tokenizer
        self.max_len = model.max_seq_length

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="np"
        )
        feed = {name: tokens[name].astype(np.int64) for name in INPUTS}
        hidden = self.session.run(None, feed)[0]
        mask = tokens["attention_mask"][..., None].astype(np.float32)
        return unit_rows((hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None))


def onnx_minilm(threads: int = 1) -> OnnxMiniLM:
    """The ONNX encoder, exporting the graph first if this model has none cached yet."""
    model = sentence_model()
    path = cache_dir() / f"minilm-{_weights_digest(model)}.onnx"
    if not path.exists():
        export_minilm(model, path)
    return OnnxMiniLM(model, path, threads)


def live_threads() -> int:
    """Intra-op threads of a web process's encoder (T2I_WEB_TORCH_THREADS, default 1): every web process has its
    own embedder, so more would put processes × threads on the same cores, where OpenMP threads spin-waiting
    on each other cost more than a small batch's parallelism gains (docs/submit_path.md)."""
    return int(os.environ.get("T2I_WEB_TORCH_THREADS", "1"))


def size_live_torch() -> None:
    """Give this process's torch (the encoder when ONNX Runtime cannot run, and any other torch use) `live_threads()`
    intra-op threads."""
    import torch

    torch.set_num_threads(live_threads())


def live_embedder() -> Callable[[list[str]], np.ndarray]:
    """This process's encoder for the live submit path: ONNX Runtime, or `embed_texts` when it cannot run
    (T2I_EMBEDDER=torch forces the latter)."""
    global _LIVE
    if _LIVE is None:
        with _LOCK:
            if _LIVE is None:
                _LIVE = _choose_live_embedder()
    return _LIVE


def _choose_live_embedder() -> Callable[[list[str]], np.ndarray]:
    if os.environ.get("T2I_EMBEDDER", "onnx") == "torch":
        return embed_texts
    try:
        return onnx_minilm(live_threads())
    except Exception as exc:  # a missing package or a failed export: torch still gives the same embeddings
        log.warning("prompt embedder: ONNX Runtime unavailable (%s); using torch", exc)
        return embed_texts
