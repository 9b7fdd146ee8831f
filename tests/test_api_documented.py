"""The API document (issue 12, item 9): error codes with their bodies, the Idempotency-Key header, examples that
work; and a reused idempotency key with a different body is a 422, not the original request."""

from __future__ import annotations

import pytest

from webapp.ledger.models import GenerationRequest

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations/"


@pytest.fixture
def document(api, embedded_services) -> dict:
    resp = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert resp.status_code == 200
    return resp.json()


def codes(document: dict, path: str, method: str) -> set[int]:
    return {int(code) for code in document["paths"][path][method]["responses"]}


def test_every_error_an_endpoint_answers_is_documented_with_its_body(document):
    generations, one = "/api/v1/generations/", "/api/v1/generations/{id}/"
    assert {202, 400, 401, 403, 413, 415, 422, 429, 503} <= codes(document, generations, "post")
    assert {200, 400, 401, 404, 429, 503} <= codes(document, generations, "get")  # 404: a page past the end
    assert {200, 304, 401, 404, 429, 503} <= codes(document, one, "get")
    assert {200, 401, 404, 409, 429, 503} <= codes(document, one + "cancel/", "post")
    assert {200, 404, 503} <= codes(document, one + "events/", "get")
    assert {204, 401, 404} <= codes(document, "/api/v1/tokens/{token_id}/", "delete")
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for code, response in operation["responses"].items():
                if int(code) >= 400:
                    assert "application/json" in response["content"], (path, method, code)
                if int(code) in (429, 503):
                    assert "Retry-After" in response["headers"], (path, method, code)
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["detail"]


def test_idempotency_key_header_and_response_headers_are_documented(document):
    post = document["paths"]["/api/v1/generations/"]["post"]
    headers = {p["name"]: p for p in post["parameters"] if p["in"] == "header"}
    assert "422" in headers["Idempotency-Key"]["description"]  # it says what a reused key does
    assert {"Location", "Idempotent-Replayed"} <= set(post["responses"]["202"]["headers"])


def test_the_documented_examples_are_accepted(api, document):
    """What Swagger UI fills in by default (its first example) and every other example: 202, not a 400."""
    examples = document["paths"]["/api/v1/generations/"]["post"]["requestBody"]["content"]["application/json"]
    bodies = [example["value"] for example in examples["examples"].values()]
    assert bodies, "the request body has examples"
    for body in bodies:
        resp = api.post(URL, body, format="json")
        assert resp.status_code == 202, (body, resp.json())


def test_reused_key_with_a_different_body_is_422_with_a_message(api):
    first = api.post(URL, {"prompt": "a fox", "seed": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k-9")
    assert first.status_code == 202
    other = api.post(URL, {"prompt": "a wolf", "seed": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k-9")
    assert other.status_code == 422
    assert "k-9" in other.json()["detail"] and "prompt" in other.json()["detail"]
    other_seed = api.post(URL, {"prompt": "a fox", "seed": 2}, format="json", HTTP_IDEMPOTENCY_KEY="k-9")
    assert other_seed.status_code == 422 and "seed" in other_seed.json()["detail"]
    in_body = api.post(URL, {"prompt": "a fox", "steps": 999, "idempotency_key": "k-9"}, format="json")
    assert in_body.status_code in (400, 422)  # steps outside the allowed range is refused either way
    same = api.post(URL, {"prompt": "a fox", "seed": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k-9")
    assert same.status_code == 202 and same["Idempotent-Replayed"] == "true"
    assert same.json()["id"] == first.json()["id"]
    assert GenerationRequest.objects.count() == 1
