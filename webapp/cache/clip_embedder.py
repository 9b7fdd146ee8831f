"""The configured pipeline's own CLIP text encoder as the cache's prompt embedder (option).

`T2I_EMBEDDER=clip` makes the cache compare prompts the way the diffusion model reads them: the
pooled output of the model folder's `text_encoder` (CLIP ViT-L for SD 1.x and SDXL, whatever the
tiny model has), L2-normalised. Widths differ between models, so vectors are zero-padded to
CLIP_DIM: padding with zeros leaves every cosine similarity exactly as it was, and lets one
`vector(1280)` column with one HNSW index serve SD 1.x (768), SD 2 (1024) and SDXL-sized encoders.
MiniLM (scheduler.embeddings) stays the default and is always stored too.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

CLIP_DIM = 1280

_lock = threading.Lock()
_loaded: dict[str, tuple] = {}


def _encoder(model_path: str):
    with _lock:
        if model_path not in _loaded:
            import torch
            from transformers import CLIPTextModel, CLIPTokenizer

            tokenizer = CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer")
            model = CLIPTextModel.from_pretrained(
                model_path, subfolder="text_encoder", torch_dtype=torch.float32
            ).eval()
            if model.config.hidden_size > CLIP_DIM:
                raise ValueError(f"text encoder width {model.config.hidden_size} exceeds CLIP_DIM {CLIP_DIM}")
            _loaded[model_path] = (tokenizer, model)
        return _loaded[model_path]


def clip_text_embeddings(prompts: list[str], model_path: str | Path, batch_size: int = 64) -> np.ndarray:
    """(n, CLIP_DIM) float32, unit norm: pooled CLIP text features, zero-padded."""
    import torch

    tokenizer, model = _encoder(str(model_path))
    out = np.zeros((len(prompts), CLIP_DIM), dtype=np.float32)
    with torch.inference_mode():
        for at in range(0, len(prompts), batch_size):
            chunk = prompts[at : at + batch_size]
            tokens = tokenizer(
                chunk, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
            )
            pooled = model(input_ids=tokens.input_ids).pooler_output.float().numpy()
            out[at : at + len(chunk), : pooled.shape[1]] = pooled
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)
