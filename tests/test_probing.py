"""The probing limit (webapp/serving/probing.py): many near-duplicate prompts from one user in a short
window are refused with 429 and a message saying what is limited and when to retry; different prompts,
repeats of one prompt and staff pass."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from tests.helpers import make_request
from webapp.ledger.models import GenerationRequest
from webapp.serving.probing import is_near_duplicate, normalise

URL = "/api/v1/generations/"
VARIANTS = [f"a red fox in the snow, take {i}" for i in range(1, 13)]
DIFFERENT = [
    "a red fox in the snow",
    "a lighthouse at dusk",
    "a bowl of ramen, studio light",
    "an astronaut riding a horse",
    "a castle made of glass",
    "a koi pond in autumn",
    "a paper boat on a pond",
    "a neon city at night in the rain",
    "portrait of an old sailor, oil painting",
    "a cat sleeping on a stack of books",
    "isometric view of a tiny island village",
    "macro photo of a dew drop on a leaf",
]


def test_normalise_and_the_rule(settings):
    assert normalise("  A Red, FOX!\tin the   snow. ") == "a red fox in the snow"
    a, b = normalise(VARIANTS[0]), normalise(VARIANTS[1])
    assert is_near_duplicate(a, None, b, None)  # 1 edit in 28 characters
    assert not is_near_duplicate(a, None, a, None)  # the same prompt again is not probing
    assert not is_near_duplicate("a cat", None, "a dog", None)  # 3 edits in 5 characters
    e1, e2 = np.zeros(384, dtype=np.float32), np.zeros(384, dtype=np.float32)
    e1[0] = e2[0] = 1.0
    assert is_near_duplicate("a cat", e1, "a dog", e2)  # same meaning by embedding
    settings.T2I_PROBE_SIMILARITY = 1.01
    assert not is_near_duplicate("a cat", e1, "a dog", e2)


@pytest.mark.django_db
def test_ninth_near_duplicate_in_a_minute_gets_429_with_the_message(api, user, embedded_services):
    codes = [api.post(URL, {"prompt": p}, format="json").status_code for p in VARIANTS[:8]]
    assert codes == [202] * 8
    resp = api.post(URL, {"prompt": VARIANTS[8]}, format="json")
    assert resp.status_code == 429
    detail = resp.json()["detail"]
    assert "near-duplicate" in detail and "at most 8" in detail and "per 60 s" in detail
    assert "Retry in" in detail and "cap" not in detail  # loadgen tells the two 429s apart by these words
    assert 1 <= int(resp["Retry-After"]) <= 60 and resp.json()["retry_after"] == int(resp["Retry-After"])
    assert GenerationRequest.objects.count() == 8  # refused: no row
    # a clearly different prompt still passes, and so does the same prompt again (more seeds)
    assert api.post(URL, {"prompt": "a lighthouse at dusk"}, format="json").status_code == 202
    assert api.post(URL, {"prompt": VARIANTS[0], "seed": 99}, format="json").status_code == 202


@pytest.mark.django_db
def test_the_window_slides(api, user, embedded_services):
    old = timezone.now() - timedelta(seconds=61)
    for p in VARIANTS[:8]:
        make_request(user, prompt=p, created_at=old)  # a minute ago: outside the window
    assert api.post(URL, {"prompt": VARIANTS[8]}, format="json").status_code == 202
    for p in VARIANTS[:7]:
        make_request(user, prompt=p, created_at=timezone.now() - timedelta(seconds=50))
    resp = api.post(URL, {"prompt": VARIANTS[9]}, format="json")  # 7 + the one just accepted = 8
    assert resp.status_code == 429 and 1 <= int(resp["Retry-After"]) <= 11


@pytest.mark.django_db
def test_different_prompts_pass(api, embedded_services):
    codes = [api.post(URL, {"prompt": p}, format="json").status_code for p in DIFFERENT]
    assert codes == [202] * len(DIFFERENT)


@pytest.mark.django_db
def test_staff_pass(api, user, embedded_services):
    user.is_staff = True
    user.save()
    codes = [api.post(URL, {"prompt": p}, format="json").status_code for p in VARIANTS[:10]]
    assert codes == [202] * 10


@pytest.mark.django_db
def test_the_limit_is_configurable(api, embedded_services, settings):
    settings.T2I_PROBE_LIMIT = 2
    codes = [api.post(URL, {"prompt": p}, format="json").status_code for p in VARIANTS[:3]]
    assert codes == [202, 202, 429]
    settings.T2I_PROBE_LIMIT = 0  # off
    assert api.post(URL, {"prompt": VARIANTS[3]}, format="json").status_code == 202


@pytest.mark.django_db
def test_the_form_shows_the_limit(client, user, embedded_services, settings):
    settings.T2I_PROBE_LIMIT = 2
    client.force_login(user)
    for p in VARIANTS[:2]:
        assert client.post("/", {"prompt": p}).status_code == 302
    resp = client.post("/", {"prompt": VARIANTS[2]})
    assert resp.status_code == 429 and b"Too many near-duplicate prompts" in resp.content
