"""Factories and polling helpers shared by the test modules (import them; fixtures live in conftest.py)."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta

from django.utils import timezone

from webapp.cache.models import CacheConfig
from webapp.ledger.models import GenerationRequest, ServingConfig

# The browser tests' Chromium (Debian's, installed by `make browser`) and its headless flags.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UNSERVED_SLOT = 9  # no test worker consumes gpu.9: a row routed there is never picked up by accident


def make_request(owner, **overrides):
    """A queued ledger row with sensible defaults, created directly (not submitted, never published).

    Defaults: prompt "x", seed 1, 64×64, 20 steps, deadline in 5 minutes, slot UNSERVED_SLOT.
    Any field of GenerationRequest can be overridden, e.g. ``make_request(user, worker=0, steps=50)``.
    """
    values = dict(
        owner=owner,
        prompt="x",
        seed=1,
        width=64,
        height=64,
        steps=20,
        worker=UNSERVED_SLOT,
        deadline=timezone.now() + timedelta(minutes=5),
    )
    values.update(overrides)
    return GenerationRequest.objects.create(**values)


def _configure(model, fields: dict):
    config = model.current()
    for name, value in fields.items():
        setattr(config, name, value)
    config.full_clean()
    config.save()
    return config


def cached_entry(prompt: str, *, model_key: str = "k", levels=(5, 10, 15, 20, 25), **fields):
    """A cache index row only (no latent files): enough for lookups at submit and for re-routes, which read
    rows. `fields`: any other CacheEntry column (tenant, creator, source_request…)."""
    from webapp.cache import store as cache_store
    from webapp.cache.models import CacheEntry

    return CacheEntry.objects.create(
        prompt=prompt,
        prompt_sha=cache_store.prompt_sha(prompt),
        embedding=cache_store.embed([prompt])[0],
        model_key=model_key,
        levels=list(levels),
        **fields,
    )


def serving_config(**fields):
    """Set fields of the one ServingConfig row, validate them (full_clean) and save; returns the row."""
    return _configure(ServingConfig, fields)


def cache_config(**fields):
    """The same for the one CacheConfig row (e.g. ``cache_config(byte_budget=...)``)."""
    return _configure(CacheConfig, fields)


def wait_for_status(request_id, statuses, timeout: float = 60, tick=None):
    """Poll the ledger until the row reaches one of `statuses` (calling `tick` each round)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = GenerationRequest.objects.get(pk=request_id)
        if row.status in statuses:
            return row
        if tick:
            tick()
        time.sleep(0.1)
    raise AssertionError(f"request {request_id} still {row.status} after {timeout} s: {row.error}")


def serving_config_admin_form(client, django_user_model) -> tuple[str, dict]:
    """Log a new superuser in and return the serving configuration's admin change URL with the form's
    current values, ready to edit and POST (as a person would in the browser)."""
    admin = django_user_model.objects.create_superuser("root", "r@x.invalid", "pw-root-123")
    client.force_login(admin)
    url = f"/admin/ledger/servingconfig/{ServingConfig.current().pk}/change/"
    form = client.get(url).context["adminform"].form
    return url, {k: ("" if v is None else v) for k, v in form.initial.items()}
