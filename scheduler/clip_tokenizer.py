"""CLIP's BPE tokenizer with the real vocabulary, built offline from the file inside open-clip-torch.

Shared by the tiny-model builder (GPU side) and the prompt-length check at submit (web side) when
no model folder is on the machine. No network, no model hub; transformers is imported on use.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

# The real CLIP vocabulary: 256 bytes + 256 end-of-word bytes + 48894 merges + 2 special tokens.
CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def open_clip_vocab_path() -> Path:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed ``open_clip`` package.

    ``import open_clip`` needs torchvision (which we do not install), so locate the package without
    importing it.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open-clip-torch is not installed (pip install --no-deps open-clip-torch)")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise RuntimeError(f"CLIP vocabulary file not found: {path}")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and merges, built exactly as open_clip's ``SimpleTokenizer`` does.

    The resulting ids are those of OpenAI CLIP (and of the SD/SDXL tokenizers on the model hub).
    """
    with gzip.open(open_clip_vocab_path()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    # Line 0 is a version header; CLIP uses the first 49152 - 256 - 2 merges.
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == CLIP_VOCAB_SIZE, len(vocab)
    return vocab, merges  # type: ignore[return-value]


def build_clip_tokenizer(pad_token: str = EOS):
    """A ``transformers.CLIPTokenizer`` with the real vocabulary. SD 1.x pads with ``<|endoftext|>``; SDXL's second
    tokenizer pads with ``!``."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    # transformers 5 takes vocab=/merges=; the old vocab_file= keyword is silently ignored.
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=CLIP_MAX_LENGTH)
