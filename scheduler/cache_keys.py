"""The approximate cache's key: which runs may share latents (DESIGN §6).

A latent is reusable only by a run of the same model, scheduler, N and resolution. Pure Python,
so the engine (GPU side, no Django) and the cache store (Django) compute the same names.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

# Schedulers whose step at K depends only on the latent at K (not on earlier model outputs), so a
# resumed run reproduces the full run exactly; their short names appear in cache keys.
RESUMABLE_SCHEDULERS: dict[str, str] = {"DDIMScheduler": "ddim", "EulerDiscreteScheduler": "euler"}


def model_key(model: str, scheduler: str, steps: int, width: int, height: int) -> str:
    """The cache key: latents are only reusable by runs of the same model, scheduler, N and size."""
    return f"{model}|{scheduler}|N{int(steps)}|{int(width)}x{int(height)}"


def _mtime_ns(path: Path) -> int:
    """Part of the memo key: a folder built, replaced or filled after a first look is read again."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def model_identity(model_path: str | os.PathLike) -> str:
    """A stable name for a local diffusers folder: its name plus a hash of its configs and the sizes of
    its weight files (equal on every machine holding the same copy, unlike paths or mtimes)."""
    path = Path(model_path)
    return _model_identity(str(path), _mtime_ns(path))


@lru_cache(maxsize=16)
def _model_identity(model_path: str, mtime_ns: int) -> str:
    path = Path(model_path)
    digest = hashlib.sha256()
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if not f.is_file():
                continue
            rel = f.relative_to(path).as_posix()
            if f.suffix == ".json":
                digest.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
            elif f.suffix in (".safetensors", ".bin", ".ckpt", ".pt"):
                digest.update(f"{rel}:{f.stat().st_size}\0".encode())
    else:
        digest.update(str(path).encode())
    return f"{path.name[:80]}-{digest.hexdigest()[:12]}"


def folder_scheduler(model_path: str | os.PathLike) -> str:
    """Short name ("ddim", "euler") of the scheduler a diffusers folder ships, as the engine names it.
    A non-resumable scheduler is returned by class name (the engine will refuse it); "unknown" while
    the folder has no scheduler config (asked again once it has one)."""
    config = Path(model_path) / "scheduler" / "scheduler_config.json"
    return _folder_scheduler(str(config), _mtime_ns(config))


@lru_cache(maxsize=16)
def _folder_scheduler(config_path: str, mtime_ns: int) -> str:
    try:
        name = json.loads(Path(config_path).read_text())["_class_name"]
    except (OSError, KeyError, ValueError):
        return "unknown"
    return RESUMABLE_SCHEDULERS.get(name, name)
