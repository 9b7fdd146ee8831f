"""The live path's prompt encoder: the same MiniLM run by ONNX Runtime instead of torch.

A web process embeds one prompt (or a small batch) per submit. Torch spends most of that on framework
dispatch around a tiny model: one prompt costs 15 ms of CPU with torch and 7 ms with ONNX Runtime on this
machine (docs/submit_path.md, "Round 3"). The graph is exported once from the packaged sentence-transformers
model (`scheduler.embeddings`) with torch's own exporter and kept under `.cache/onnx/`, keyed by a digest of
the weight files and of the exporter's inputs; every process after the first loads the file. Such a process
reads the packaged `tokenizer.json` with the `tokenizers` library and never imports torch, transformers or
sentence-transformers: a web process's start-up went from about 9 s to 3.5 s, and its memory from 800 to
370 MB (docs/submit_path.md, "Warm-up").

The embedding is the torch one up to float rounding (max |Δ| ~2e-7, as between batch sizes): same tokenizer,
same weights, mean pooling over the attention mask and L2 normalisation done here exactly as
sentence-transformers does. tests/test_submit_path_routing.py checks 1,003 prompts against `embed_texts`,
and that routing decides the same. The simulator keeps `embed_texts` (its
cached prompt-file embeddings stay bit-for-bit what they were).

Without onnxruntime, or if the export fails, `live_embedder()` falls back to `embed_texts` with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .embeddings import EMBED_DIM, embed_texts, minilm_dir, sentence_model, unit_rows

log = logging.getLogger(__name__)

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_LOCK = threading.Lock()
_LIVE: Callable[[list[str]], np.ndarray] | None = None


def cache_dir() -> Path:
    """Where exported graphs are kept (T2I_ONNX_CACHE, default `.cache/onnx` under the working directory)."""
    return Path(os.environ.get("T2I_ONNX_CACHE", Path(".cache") / "onnx"))


WEIGHT_FILES = ("config.json", "model.safetensors")  # what the exported graph is computed from


def max_seq_length(folder: Path) -> int:
    """Tokens the encoder sees per prompt (sentence-transformers' setting, not tokenizer.json's own)."""
    return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])


def _weights_digest(folder: Path, max_len: int) -> str:
    """A digest of the model's weight files and the export settings: a new model or opset gets a new file."""
    h = hashlib.sha256(f"opset={OPSET};max_len={max_len}".encode())
    for name in WEIGHT_FILES:
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:16]


def minilm_tokenizer(folder: Path, max_len: int):
    """The model's own fast tokenizer, set as sentence-transformers sets it: truncation at `max_len`, padding
    to the longest prompt of a batch (tokenizer.json itself says 128 and pads every prompt to 128)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad = tokenizer.padding or {}
    tokenizer.enable_truncation(max_len)
    tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))
    return tokenizer


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

    def __init__(self, path: Path, tokenizer, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # live_threads() says why one by default
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        encoded = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        types = np.array([e.type_ids for e in encoded], dtype=np.int64)
        hidden = self.session.run(None, dict(zip(INPUTS, (ids, mask, types), strict=True)))[0]
        weights = mask[..., None].astype(np.float32)
        return unit_rows((hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None))


def onnx_minilm(threads: int = 1) -> OnnxMiniLM:
    """The ONNX encoder, exporting the graph first (with torch) if this model has none cached yet."""
    folder = minilm_dir()
    max_len = max_seq_length(folder)
    path = cache_dir() / f"minilm-{_weights_digest(folder, max_len)}.onnx"
    if not path.exists():
        export_minilm(sentence_model(), path)
    return OnnxMiniLM(path, minilm_tokenizer(folder, max_len), threads)


def live_threads() -> int:
    """Intra-op threads of a web process's encoder (T2I_WEB_TORCH_THREADS, default 1): every web process has its
    own embedder, so more would put processes × threads on the same cores, where OpenMP threads spin-waiting
    on each other cost more than a small batch's parallelism gains (docs/submit_path.md)."""
    return int(os.environ.get("T2I_WEB_TORCH_THREADS", "1"))


def size_live_torch() -> None:
    """Give this process's torch (the encoder when ONNX Runtime cannot run) `live_threads()` intra-op threads."""
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


def live_embedder_loaded() -> bool:
    """Whether this process has its live encoder already (cheap: no loading, no lock). The web process's
    readiness check (`/readyz`) waits for its start-up warm-up to get here."""
    return _LIVE is not None


def _choose_live_embedder() -> Callable[[list[str]], np.ndarray]:
    if os.environ.get("T2I_EMBEDDER", "onnx") == "torch":
        size_live_torch()
        return embed_texts
    try:
        return onnx_minilm(live_threads())
    except Exception as exc:  # a missing package or a failed export: torch still gives the same embeddings
        log.warning("prompt embedder: ONNX Runtime unavailable (%s); using torch", exc)
        size_live_torch()
        return embed_texts
