"""Issue 16: the live embedder (batched, ONNX Runtime) routes exactly as one-prompt-per-call torch embedding
did, on 1,000 prompts.

Submit used to embed each prompt alone (`embed_texts([prompt])`); it now hands it to the process's
micro-batching embedder (scheduler/embedding_batcher.py), where it shares an encoder call with whatever other
prompts are waiting. Batching changes embeddings by float rounding only; here 1,000 generated prompts, sent
from 16 threads so they really are batched, must give embeddings within 1e-3 cosine of the one-at-a-time ones
and, through the same routing (pgvector neighbour, K*, the policy's worker and K′) from the same policy
state, identical decisions. The batches are encoded by the live encoder (scheduler/onnx_embedder.py), so the
same comparison covers ONNX Runtime against torch. The same torch embeddings, plus three edge cases, are the
reference the ONNX encoder must match to 1e-5 one prompt per call (computed once, for both tests).
"""

from __future__ import annotations

import functools
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from scheduler.embedding_batcher import EmbeddingBatcher
from scheduler.embeddings import embed_texts
from scheduler.onnx_embedder import OnnxMiniLM, live_embedder, onnx_minilm
from tests.helpers import serving_config
from webapp.cache import store as cache_store
from webapp.cache.keys import model_key_for
from webapp.serving import live_policy
from webapp.serving.routing import route_request

pytestmark = pytest.mark.django_db(transaction=True)  # the cache store writes only in autocommit

SUBJECTS = ["a red fox", "an old lighthouse", "a glass teapot", "a mountain village", "a robot gardener",
            "a paper boat", "a jazz trio", "a desert caravan", "a neon alley", "a sleeping cat", "a castle",
            "a sailing ship", "a bowl of ramen", "a steam train", "an owl", "a sunflower field"]  # fmt: skip
PLACES = ["in the snow", "at dusk", "under the sea", "on the moon", "in a rainforest", "in a busy market",
          "on a rooftop", "in a library", "by a frozen lake", "in a wheat field", "at night", "in fog"]  # fmt: skip
STYLES = ["oil painting", "watercolour", "photograph, 35mm", "pixel art", "pencil sketch", "isometric render",
          "ukiyo-e print", "studio lighting", "cinematic still", "children's book illustration", ""]  # fmt: skip
LEVELS = (5, 10, 15, 20, 25)


def prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = f"{rng.choice(SUBJECTS)} {rng.choice(PLACES)}"
        style = rng.choice(STYLES)
        out.append(f"{text}, {style}" if style else text)
    return out


@functools.cache
def torch_one_by_one(seed: int) -> tuple[list[str], np.ndarray]:
    """1,000 generated prompts and their torch embeddings one prompt per call (what submit used to compute):
    the reference of both tests here, computed once per process."""
    texts = prompts(1000, seed=seed)  # many near or equal to cached prompts, some not
    return texts, np.stack([embed_texts([t])[0] for t in texts])


def batched_embeddings(texts: list[str]) -> tuple[np.ndarray, int]:
    """Embeddings through a batcher with the live encoder from 16 threads; also the largest batch it encoded."""
    sizes: list[int] = []
    live = live_embedder()
    assert isinstance(live, OnnxMiniLM), "the live path fell back to torch: ONNX Runtime was not compared"

    def encode(batch: list[str]) -> np.ndarray:
        sizes.append(len(batch))
        return live(batch)

    batcher = EmbeddingBatcher(encode)
    with ThreadPoolExecutor(16) as pool:
        vectors = list(pool.map(batcher.embed, texts))
    return np.stack(vectors), max(sizes)


def decisions(user, texts: list[str], vectors: np.ndarray) -> list[tuple]:
    """Route every prompt, in order, from a fresh policy object; what each routing decided."""
    live_policy.live_policy.reset()
    config = serving_config()  # the row as it is now (saved unchanged)
    deadline_s = config.slo_seconds
    out = []
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        arrival = 1_000_000.0 + 0.05 * i  # the same arrival times in both passes
        r = route_request(
            config=config,
            owner=user,
            request_id=f"r{i}",
            prompt=text,
            embedding=vector,
            arrival=arrival,
            deadline=arrival + deadline_s,
            width=config.default_size,
            height=config.default_size,
            steps=config.default_steps,
        )
        out.append((r.k_star, r.neighbor_id, r.worker, r.k_prime, r.batch_limit, r.refused, r.similarity))
    return out


@pytest.mark.slow
def test_batched_embedding_routes_like_one_prompt_per_call(user, one_torch_thread):
    config = serving_config(cache_scope="shared")
    key = model_key_for(config.default_steps, config.default_size, config.default_size)
    cached = sorted(set(prompts(300, seed=1)))
    rng = random.Random(2)
    latent = torch.zeros(1, 4, 8, 8)
    levels = [dict.fromkeys(LEVELS[: rng.randint(1, len(LEVELS))], latent) for _ in cached]
    assert all(cache_store.insert_many(key, cached, levels, embed_texts(cached), evict=False))

    texts, one_by_one = torch_one_by_one(seed=3)
    batched, largest_batch = batched_embeddings(texts)

    assert largest_batch > 1, "the threads never shared an encoder call: nothing was compared"
    cosine = np.sum(one_by_one * batched, axis=1)
    assert cosine.min() >= 1 - 1e-3

    old, new = decisions(user, texts, one_by_one), decisions(user, texts, batched)
    assert len({d[0] for d in old}) > 1, "every prompt got the same K*: the test would not see a difference"
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        assert a[:-1] == b[:-1], f"prompt {i} ({texts[i]!r}) routed differently: {a} vs {b}"
        assert (a[-1] is None) == (b[-1] is None) and (a[-1] is None or abs(a[-1] - b[-1]) < 1e-5)


@pytest.mark.slow
def test_onnx_embeddings_match_torch_on_1000_prompts(one_torch_thread):
    texts, by_torch = torch_one_by_one(seed=3)
    edge = ["", "x", "a " * 300]  # empty, one token, longer than the 256-token limit
    texts = texts + edge
    by_torch = np.concatenate([by_torch, *(embed_texts([t]) for t in edge)])
    encoder = onnx_minilm()
    by_onnx = np.concatenate([encoder(texts[i : i + 1]) for i in range(len(texts))])  # one per call, as idle
    assert by_onnx.shape == by_torch.shape == (len(texts), 384) and by_onnx.dtype == np.float32
    assert np.abs(by_onnx - by_torch).max() < 1e-5
    assert np.sum(by_onnx * by_torch, axis=1).min() >= 1 - 1e-3
    batched = encoder(texts[:64])  # padded to the longest: the same vectors up to rounding
    assert np.abs(batched - by_onnx[:64]).max() < 1e-5
