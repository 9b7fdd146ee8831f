"""Counting CLIP tokens of a prompt, with the tokenizer of the configured model.

The text encoder sees at most 77 tokens (start and end included). We reject longer
prompts rather than truncating them silently: the client learns exactly what was too long.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from django.conf import settings

from scheduler.clip_tokenizer import build_clip_tokenizer

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _tokenizer():
    with _lock:
        model_tokenizer = settings.T2I_MODEL_PATH / "tokenizer"
        if model_tokenizer.is_dir():
            from transformers import CLIPTokenizer

            return CLIPTokenizer.from_pretrained(str(model_tokenizer))
        # No model on this machine (e.g. emulated workers): the same CLIP vocabulary.
        return build_clip_tokenizer()


def count_tokens(prompt: str) -> int:
    """Tokens the text encoder would see, including the start and end tokens."""
    return len(_tokenizer()(prompt, truncation=False)["input_ids"])
