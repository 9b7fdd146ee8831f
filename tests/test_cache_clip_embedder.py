"""The pipeline's own CLIP text encoder as the cache's embedder (T2I_EMBEDDER=clip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from webapp.cache import store as cache_store
from webapp.cache.clip_embedder import CLIP_DIM, clip_text_embeddings
from webapp.cache.keys import model_key_for
from webapp.cache.models import CacheEntry

PROMPTS = ["a lighthouse on a cliff at dusk", "a red fox sleeping in the snow", "a bowl of ramen, studio photo"]


@pytest.mark.django_db  # plain: no rows written
def test_clip_embeddings_are_unit_norm_zero_padded_and_deterministic(tiny_model_path, embedded_services):
    vectors = clip_text_embeddings(PROMPTS, tiny_model_path)
    assert vectors.shape == (3, CLIP_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    from transformers import CLIPTextConfig

    width = CLIPTextConfig.from_pretrained(tiny_model_path / "text_encoder").hidden_size
    assert not vectors[:, width:].any()  # padding only: cosines are the encoder's own
    np.testing.assert_array_equal(vectors, clip_text_embeddings(PROMPTS, tiny_model_path))


@pytest.mark.django_db(transaction=True)  # insert_many refuses to run inside an atomic block
def test_clip_mode_stores_and_searches_clip_vectors(tiny_model_path, embedded_services, settings):
    settings.T2I_EMBEDDER = "clip"
    key = model_key_for(50, 64, 64)
    latents = [{5: torch.zeros(1, 4, 8, 8)} for _ in PROMPTS]
    ids = cache_store.insert_many(key, PROMPTS, latents)
    assert all(CacheEntry.objects.get(pk=i).clip_embedding is not None for i in ids)

    query = cache_store.query_vector(PROMPTS[1], minilm=None)
    entry, similarity = cache_store.nearest(query, key)
    stored = clip_text_embeddings(PROMPTS, tiny_model_path)
    expected = int(np.argmax(stored @ query))
    assert entry.prompt == PROMPTS[expected]
    assert similarity == pytest.approx(float(stored[expected] @ query), abs=1e-5)
    # The MiniLM column is kept in step, so switching back needs no re-embedding.
    settings.T2I_EMBEDDER = "minilm"
    found, s = cache_store.nearest(cache_store.embed([PROMPTS[2]])[0], key)
    assert found.prompt == PROMPTS[2] and s == pytest.approx(1.0, abs=1e-5)
