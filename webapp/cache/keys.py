"""The cache key of a request for the configured model, as submit, workers and warm_cache compute it."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from scheduler.cache_keys import folder_scheduler, model_identity, model_key


def model_key_for(
    steps: int, width: int, height: int, model_path: str | os.PathLike | None = None, scheduler: str | None = None
) -> str:
    """The key for ``settings.T2I_MODEL_PATH`` (or ``model_path``): the scheduler is ``T2I_SCHEDULER``
    when the engine swaps the folder's (real SD 1.x folders ship PNDM, which cannot be resumed), else
    the folder's own. Emulated workers get keys of their own: placeholder latents never seed a real run."""
    path = Path(model_path if model_path is not None else settings.T2I_MODEL_PATH)
    scheduler = scheduler or settings.T2I_SCHEDULER or folder_scheduler(str(path))
    if settings.T2I_ENGINE == "emulated":
        scheduler = f"emulated-{scheduler}"
    return model_key(model_identity(str(path)), scheduler, steps, width, height)
