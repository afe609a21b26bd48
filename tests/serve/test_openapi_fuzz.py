"""Schemathesis against the app's own /openapi.json: requests made from the document (valid ones and ones that
break it), each answer checked for no 5xx, a documented status code, a documented content type and a body
that matches its documented schema. Deterministic (derandomized) and bounded (a few dozen cases per route)."""

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("httpx")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kqv.serve.app import create_app  # noqa: E402
from tests.serve.served import explorers  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# built at import: schemathesis.pytest.from_fixture fails under pytest 9 ('Function' object has no attribute '_nodeid')
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(explorers()))


@schema.parametrize()
@settings(max_examples=50, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_what_the_document_promises(case, one_torch_thread):
    case.call_and_validate(checks=CHECKS)
