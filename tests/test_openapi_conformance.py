"""The OpenAPI document tells the truth (issue 12, item 9): schemathesis sends generated requests, valid and
invalid, to every operation of the real API (in process, through Django's WSGI handler, on the test PostgreSQL
and Redis) and checks each answer: no 5xx, every status code documented, every body and header as documented.

Bounded: MAX_EXAMPLES per operation and mode, about a minute in all on a busy 2-core machine.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from knox.models import AuthToken
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks as openapi_checks

from tests.helpers import make_request, serving_config

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MAX_EXAMPLES = 12
# What "tells the truth" means here. Left out: positive_data_acceptance (the allowed sizes and steps are the
# operator's, so a schema-valid width may still be a documented 400), negative_data_rejection (an empty `?page=`
# or `?status=` means "no filter", by design) and the stateful checks. Invalid requests are still sent (the
# negative mode): their answers must be documented 4xx, never a 5xx.
CHECKS = [not_a_server_error] + [
    getattr(openapi_checks, name)
    for name in (
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "ignored_auth",
    )
]


@pytest.fixture
def api_schema(embedded_services):
    document = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(document)
    schema.app = WSGIHandler()
    return schema


@pytest.fixture
def token_header(user, tiny_model_path) -> dict[str, str]:
    serving_config(max_in_flight=0)  # no cap: the 429 of the cap would hide the 202s
    return {"Authorization": f"Token {AuthToken.objects.create(user=user)[1]}"}


@pytest.fixture
def own_rows(user) -> list[str]:
    """Ids the generated paths use besides random ones (which are 404s): a finished and a queued request."""
    now = timezone.now()
    return [
        str(make_request(user, status="succeeded", started_at=now, finished_at=now).id),
        str(make_request(user).id),
    ]


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def check_operation(operation, headers: dict, mode: GenerationMode, path_parameters: dict | None = None) -> bool:
    """Send up to MAX_EXAMPLES generated requests and check every answer; False if none could be generated."""

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # nothing of it can be made invalid (no parameters, no body)
        assert mode == GenerationMode.NEGATIVE, operation.path
        return False
    return True


def test_every_answer_matches_the_document(api_schema, token_header, own_rows):
    tried = []
    for operation in operations(api_schema):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if check_operation(operation, token_header, mode):
                tried.append(f"{operation.method.upper()} {operation.path} {mode.value}")
        if "{id}" in operation.path:  # the paths of rows that exist: 200s, and 409 for a finished one's cancel
            for row_id in own_rows:
                check_operation(operation, token_header, GenerationMode.POSITIVE, {"id": row_id})
    print("\n".join(tried))
    assert len(tried) >= 15, tried
