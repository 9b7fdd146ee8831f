"""`manage.py warm_cache` with the tiny model: full generations become cache entries whose latents resume
the same run exactly."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from django.core.management import call_command

from tests.test_cache_store import assert_consistent
from webapp.cache import store as cache_store
from webapp.cache.keys import model_key_for
from webapp.cache.models import CacheEntry

pytestmark = pytest.mark.django_db(transaction=True)  # warm_cache inserts: the store refuses an atomic block

STEPS = 30  # > 25: every default cache level is captured


def test_warm_cache_fills_the_cache_and_a_cached_latent_resumes_the_run(
    embedded_services, tiny_model_path, settings, tmp_path
):
    settings.T2I_CACHE_DIR = tmp_path / "latent-cache"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "a red fox in the snow\n\na red fox in the snow\na lighthouse at dusk\na bowl of ramen\nnot reached\n"
    )
    out = io.StringIO()
    call_command(
        "warm_cache", prompts=str(prompts), limit=3, steps=STEPS, size=64, batch_size=2, no_progress=True, stdout=out
    )
    assert "3 to generate" in out.getvalue() and "Cached 3 prompts" in out.getvalue()

    from workers import runtime
    from workers.engine import GenItem

    engine = runtime.engine()
    key = model_key_for(STEPS, 64, 64, scheduler=engine.scheduler_name)
    entries = {e.prompt: e for e in CacheEntry.objects.filter(model_key=key)}
    assert set(entries) == {"a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen"}
    assert all(e.levels == [5, 10, 15, 20, 25] for e in entries.values())
    assert_consistent()

    # The stored embedding is MiniLM's, so the prompt finds itself.
    q = cache_store.embed(["a lighthouse at dusk"])[0]
    entry, s = cache_store.nearest(q, key)
    assert entry.prompt == "a lighthouse at dusk" and s == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(np.asarray(entry.embedding), q, atol=1e-6)

    # Resuming the prompt from its own cached level-25 latent reproduces the full run (seed 1 = its
    # position in the file's distinct prompts). Tolerance: warm_cache ran it in another batch, and CPU
    # kernels round differently with batch size (~1e-5 relative); the engine's own tests check exactness.
    level, latent = cache_store.start_latent(entry.pk, 25)
    assert level == 25 and latent.shape == engine.latent_shape(64, 64)
    full, resumed = engine.generate(
        [
            GenItem(prompt=entry.prompt, seed=1, width=64, height=64, steps=STEPS),
            GenItem(prompt=entry.prompt, width=64, height=64, steps=STEPS, start_level=25, start_latent=latent),
        ]
    )
    assert torch.allclose(full.latents[25], latent, rtol=1e-5, atol=1e-4)
    assert torch.allclose(full.final_latent, resumed.final_latent, rtol=1e-5, atol=1e-4)

    # Run again: everything is cached already, nothing is generated.
    out = io.StringIO()
    call_command("warm_cache", prompts=str(prompts), limit=3, steps=STEPS, size=64, no_progress=True, stdout=out)
    assert "3 already cached, 0 to generate" in out.getvalue()
    assert CacheEntry.objects.count() == 3
