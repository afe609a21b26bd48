"""/openapi.json tells the truth: the text pattern means what the server checks (str.strip) in pydantic,
Python's re, a JSON Schema validator and ECMA-262 itself (node); every operation documents its errors with
one Error schema; the bounds are the server's; and real answers validate against their documented schemas."""

import json
import re
import shutil
import subprocess
import sys
from typing import Annotated

import pytest
from pydantic import TypeAdapter, ValidationError

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from kqv.generate.sampling import MAX_SEED  # noqa: E402
from kqv.serve.app import create_app  # noqa: E402
from kqv.serve.schema import NOT_ONLY_SPACE, TextRequest  # noqa: E402
from tests.serve.served import explorers  # noqa: E402

POSTS = ["/api/tokenize", "/api/attention", "/api/next-token", "/api/generate", "/api/explain"]
EVERY_CHARACTER = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]  # surrogates: not text
KEPT = [bool(ch.strip()) for ch in EVERY_CHARACTER]  # what the explorer checks: `if not text.strip()`


@pytest.fixture(scope="module")
def client(one_torch_thread):
    return TestClient(create_app(explorers()))


@pytest.fixture(scope="module")
def spec(client):
    return client.get("/openapi.json").json()


def test_the_text_pattern_is_str_strip_in_pydantic_and_python_re(spec):
    text = TypeAdapter(Annotated[str, TextRequest.model_fields["text"]])  # the request's own field: Rust regex

    def accepted(ch: str) -> bool:
        try:
            text.validate_python(ch)
            return True
        except ValidationError:
            return False

    assert [accepted(ch) for ch in EVERY_CHARACTER] == KEPT
    pattern = re.compile(spec["components"]["schemas"]["TextRequest"]["properties"]["text"]["pattern"])
    assert pattern.pattern == NOT_ONLY_SPACE
    assert [bool(pattern.search(ch)) for ch in EVERY_CHARACTER] == KEPT
    assert accepted(" \u3000x\n") and not accepted(" \u3000\u2028\n")  # search, not match: anywhere in the text


def test_the_text_pattern_is_str_strip_for_a_json_schema_validator(spec):
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    validator = jsonschema_rs.validator_for(spec["components"]["schemas"]["TextRequest"]["properties"]["text"])
    assert [validator.is_valid(ch) for ch in EVERY_CHARACTER] == KEPT


@pytest.mark.skipif(shutil.which("node") is None, reason="node (an ECMA-262 regex engine) is not installed")
@pytest.mark.parametrize("flags", ["", "u"])
def test_the_text_pattern_is_str_strip_in_ecma_262(spec, flags):
    """JSON Schema patterns are ECMA-262 regexes: node lists the code points the pattern refuses."""
    pattern = spec["components"]["schemas"]["TextRequest"]["properties"]["text"]["pattern"]
    script = (
        f"const p = new RegExp({json.dumps(pattern)}, {json.dumps(flags)}); const refused = [];"
        "for (let c = 0; c <= 0x10FFFF; c++) {"
        "  if (c >= 0xD800 && c <= 0xDFFF) continue;"
        "  if (!p.test(String.fromCodePoint(c))) refused.push(c);"
        "} console.log(JSON.stringify(refused));"
    )
    refused = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout)
    assert refused == [ord(ch) for ch, kept in zip(EVERY_CHARACTER, KEPT, strict=True) if not kept]


def test_every_operation_documents_its_errors_with_one_error_schema(spec):
    schemas = spec["components"]["schemas"]
    error_schema = schemas["Error"]
    assert error_schema["type"] == "object" and error_schema["additionalProperties"] is False
    assert list(error_schema["properties"]) == error_schema["required"] == ["error"]
    assert error_schema["properties"]["error"]["type"] == "string"
    assert "HTTPValidationError" not in schemas  # FastAPI's {"detail": […]}, which the server never sends
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path in POSTS:
        responses = spec["paths"][path]["post"]["responses"]
        assert sorted(responses) == ["200", "400", "404", "413", "422"], path
        assert all(responses[code]["content"] == error for code in ["400", "404", "413", "422"]), path
    assert list(spec["paths"]["/api/models"]["get"]["responses"]) == ["200"]


def test_success_schemas_name_their_answers(spec):
    def success(path, method="post"):
        return spec["paths"][path][method]["responses"]["200"]["content"]

    assert success("/api/models", "get") == {
        "application/json": {"schema": {"$ref": "#/components/schemas/ModelsAnswer"}}
    }
    for path, answer in [("/api/tokenize", "TokensAnswer"), ("/api/attention", "AttentionAnswer"),
                         ("/api/next-token", "NextTokenAnswer"), ("/api/explain", "ExplainAnswer")]:  # fmt: skip
        assert success(path) == {"application/json": {"schema": {"$ref": f"#/components/schemas/{answer}"}}}
    assert list(success("/api/generate")) == ["application/x-ndjson"]


def test_bounds_in_the_document_are_the_servers(spec):
    schemas = spec["components"]["schemas"]
    seed = schemas["GenerateRequest"]["properties"]["seed"]["anyOf"][0]
    assert seed["minimum"] == 0 and seed["exclusiveMaximum"] == 2**64 == MAX_SEED + 1  # exact even as a float
    assert "maximum" not in seed
    temperature = schemas["NextTokenRequest"]["properties"]["temperature"]
    assert temperature["minimum"] == 0 and temperature["maximum"] == 10
    for request in ["TextRequest", "AttentionRequest", "NextTokenRequest", "GenerateRequest"]:
        assert schemas[request]["properties"]["model"]["enum"] == ["gpt", "translation"]
        assert schemas[request]["properties"]["text"]["minLength"] == 1


def _validator(spec, schema: dict):
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    return jsonschema_rs.validator_for({**schema, "components": spec["components"]})


REQUESTS = [
    ("/api/tokenize", {}),
    ("/api/attention", {}),
    ("/api/attention", {"kind": None, "layer": 0, "head": 1}),
    ("/api/next-token", {"temperature": 0.7, "top_k": 5, "top_p": 0.9, "show": 7}),
    ("/api/explain", {}),
]


def test_answers_validate_against_their_documented_schemas(client, spec):
    for model, text in [("gpt", "ROMEO:"), ("translation", "And God said")]:
        for path, extra in REQUESTS:
            answer = client.post(path, json={"model": model, "text": text, **extra})
            assert answer.status_code == 200, answer.text
            schema = spec["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
            validator = _validator(spec, schema)
            validator.validate(answer.json())
            assert not validator.is_valid({**answer.json(), "model": 3})  # the control: the schema does check
        body = {"model": model, "text": text, "max_new_tokens": 5, "seed": 1}
        lines = client.post("/api/generate", json=body).text.splitlines()
        content = spec["paths"]["/api/generate"]["post"]["responses"]["200"]["content"]["application/x-ndjson"]
        validator = _validator(spec, content["schema"])
        for line in lines:
            validator.validate(json.loads(line))
        assert json.loads(lines[-1])["done"] is True
    models = _validator(spec, {"$ref": "#/components/schemas/ModelsAnswer"})
    models.validate(client.get("/api/models").json())


def test_error_answers_validate_against_the_error_schema(client, spec):
    validator = _validator(spec, {"$ref": "#/components/schemas/Error"})
    headers = {"content-type": "application/json"}
    answers = [
        client.post("/api/tokenize", content=b"{", headers=headers),  # 400
        client.post("/api/tokenize", json={"model": "nope", "text": "hi"}),  # 404
        client.post("/api/tokenize", content=b" " * 70_000, headers=headers),  # 413
        client.post("/api/tokenize", json={"model": "gpt", "text": ""}),  # 422
    ]
    assert [a.status_code for a in answers] == [400, 404, 413, 422]
    for answer in answers:
        validator.validate(answer.json())
    assert not validator.is_valid({"detail": "Not Found"})
