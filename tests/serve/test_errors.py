"""Every error `kqv serve` gives is a 4xx with exactly {"error": "one line"}: broken bodies, unknown routes and
models, wrong methods, bodies over the cap (refused before they are read whole), and requests that name paths."""

import asyncio
import json
import select
import socket
import sys
import time
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi import HTTPException  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from kqv.serve.app import MAX_BODY_BYTES, BodyCap, create_app  # noqa: E402
from kqv.serve.server import serving_in_background  # noqa: E402
from tests.serve.served import explorers  # noqa: E402

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def app(one_torch_thread):
    return create_app(explorers())


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, raise_server_exceptions=False)


def one_line_error(response, status: int) -> str:
    """The error's line, after checking the answer is exactly {"error": str} on one line with this status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert list(answer) == ["error"] and isinstance(answer["error"], str), answer
    line = answer["error"]
    assert line and line.splitlines() == [line] and "Traceback" not in line
    return line


@pytest.mark.parametrize(
    "body,says",
    [
        (b'{"model": "gpt", "text": "\xff\xfe"}', "not UTF-8 (byte 0xff at 26)"),
        (b"[" * 1000 + b"]" * 1000, "nests JSON too deeply"),
        (b'{"a":' * 1000 + b"1" + b"}" * 1000, "nests JSON too deeply"),
        (b"[" * 60_000, "nests JSON too deeply"),
        (b'{"model": "gpt", "text": ', "not valid JSON (Expecting value at character 25)"),
        (b'{"model": "gpt", "text": "hi",}', "not valid JSON"),
        (b'{"model": "gpt", "text": "hi"} x', "not valid JSON (Extra data"),
        (b'{"model": "gpt", "text": "hi", "show": ' + b"9" * 5000 + b"}", "too many digits"),
    ],
)
def test_a_body_that_is_not_json_is_a_400(client, body, says):
    assert says in one_line_error(client.post("/api/next-token", content=body, headers=JSON), 400)


@pytest.mark.parametrize(
    "body,headers,says",
    [
        (b"", JSON, "the request body is empty"),
        (b"[1, 2]", JSON, "must be a JSON object"),
        (b'"ROMEO:"', JSON, "must be a JSON object"),
        (b'{"model": "gpt", "text": "hi"}', {"content-type": "text/plain"}, "Content-Type: application/json"),
        (b'{"model": "gpt", "text": ["hi"]}', JSON, "text: Input should be a valid string"),
        (b'{"model": "gpt", "text": "hi", "show": "many"}', JSON, "show:"),
        (b'{"model": "gpt", "text": "hi", "x": ' + b"[" * 500 + b"]" * 500 + b"}", JSON, "x is not a field"),
        (b'{"model": 3, "text": "hi"}', JSON, "model: Input should be a valid string"),
        (b'{"model": "gpt", "text": "\\ud800"}', JSON, "text:"),
    ],
)
def test_json_of_the_wrong_shape_is_a_422(client, body, headers, says):
    assert says in one_line_error(client.post("/api/next-token", content=body, headers=headers), 422)


@pytest.mark.parametrize(
    "method,path,status,says",
    [
        ("GET", "/nope", 404, "nothing at '/nope'"),
        ("POST", "/api/nope", 404, "routes are listed in /openapi.json"),
        ("GET", "/static/nope.js", 404, "nothing at '/static/nope.js'"),
        ("GET", "/static/%2e%2e/%2e%2e/etc/passwd", 404, "nothing at"),
        ("GET", "/api/tokenize", 405, "GET is not allowed on '/api/tokenize'; use POST"),
        ("DELETE", "/api/models", 405, "use GET"),
        ("POST", "/", 405, "POST is not allowed"),
        ("POST", "/static/explorer.js", 405, "use GET, HEAD"),
    ],
)
def test_unknown_routes_and_wrong_methods(client, method, path, status, says):
    assert says in one_line_error(client.request(method, path), status)


@pytest.mark.parametrize(
    "model", ["nope", "../../etc/passwd", "/etc/passwd", "runs/gpt", "gpt/../gpt", "~", "x" * 5000]
)
def test_unknown_and_path_like_model_ids_are_404s(client, model):
    for path in ["/api/tokenize", "/api/attention", "/api/next-token", "/api/generate", "/api/explain", "/api/why"]:
        line = one_line_error(client.post(path, json={"model": model, "text": "hi"}), 404)
        assert "choose one of: gpt, translation" in line and len(line) <= 500


def test_any_http_exception_becomes_one_line(app, client):
    @app.get("/teapot")
    def teapot():
        raise HTTPException(status_code=418, detail="short\nand stout")

    try:
        assert one_line_error(client.get("/teapot"), 418) == "418: short and stout"
    finally:
        app.router.routes.pop()


@contextmanager
def file_system_events():
    """The file-system audit events (open, os.*, shutil.*) raised on any thread while the block runs."""
    events = []
    _recorders.append(events)
    try:
        yield events
    finally:
        _recorders.remove(events)


_recorders: list[list] = []


def _audit(event: str, args) -> None:
    if _recorders and (event == "open" or event.startswith(("os.", "shutil.", "glob."))):
        for recorder in _recorders:
            recorder.append((event, args))


sys.addaudithook(_audit)  # process-wide and permanent, so it records only inside file_system_events()


def test_requests_that_name_paths_never_touch_the_file_system(client):
    texts = {"model": "gpt", "text": "hi"}
    client.post("/api/tokenize", json=texts)  # warm up: anything imported lazily is imported now
    client.post("/api/tokenize", json={**texts, "model": "nope"})
    with file_system_events() as events:
        for model in ["../../etc/passwd", "/etc/passwd", "runs/gpt", "file:///etc/passwd", "\\\\server\\share"]:
            for path in ["/api/tokenize", "/api/next-token", "/api/generate"]:
                one_line_error(client.post(path, json={**texts, "model": model}), 404)
        one_line_error(client.post("/api/tokenize", json={**texts, "target": "/etc/passwd"}), 422)
    assert events == []
    with file_system_events() as events:  # the control: the recorder does see the file system
        open(__file__).close()
    assert events and events[0][0] == "open"


# --- the body cap


def test_a_body_over_the_cap_is_a_413_naming_the_cap(client):
    padded = json.dumps({"model": "gpt", "text": "hi"}).encode()
    exactly = padded + b" " * (MAX_BODY_BYTES - len(padded))  # valid JSON: trailing spaces
    assert client.post("/api/tokenize", content=exactly, headers=JSON).status_code == 200
    line = one_line_error(client.post("/api/tokenize", content=exactly + b" ", headers=JSON), 413)
    assert (
        f"at most {MAX_BODY_BYTES} bytes ({MAX_BODY_BYTES // 1024} KiB)" in line
        and f"is {MAX_BODY_BYTES + 1} bytes" in line
    )
    chunks = (exactly[i : i + 4096] for i in range(0, len(exactly), 4096))
    chunked = client.post("/api/tokenize", content=(c for c in [*chunks, b" "]), headers=JSON)  # no Content-Length
    assert f"is over {MAX_BODY_BYTES} bytes" in one_line_error(chunked, 413)
    assert "is 50000000 bytes" in one_line_error(client.post("/api/models", content=b" " * 50_000_000), 413)


def test_the_largest_valid_request_fits_under_the_cap():
    """A text and a target of MAX_TEXT_CHARS astral characters, each escaped as a surrogate pair; and /api/why's
    longest request, two texts and every short field at its bound."""
    from pydantic import ValidationError

    from kqv.serve.explorer import MAX_QUERY_INDEX, MAX_TEXT_CHARS, WHY_METHODS
    from kqv.serve.schema import MAX_WORD_CHARS, WhyRequest

    text = "😀" * MAX_TEXT_CHARS
    body = {"model": "x" * 100, "text": text, "target": text, "temperature": 1.0, "top_k": 10**9, "show": 200}
    assert len(json.dumps(body, ensure_ascii=True).encode()) < MAX_BODY_BYTES
    word = "😀" * MAX_WORD_CHARS
    why = {"model": "x" * 100, "text": text, "translation": text, "query_token": word,
           "query_index": -MAX_QUERY_INDEX, "target": word, "other": word, "corrupt": f"{word}={word}",
           "methods": list(WHY_METHODS), "steps": 256, "baseline": "zero", "top": 20}  # fmt: skip
    assert set(why) == set(WhyRequest.model_fields)
    assert len(json.dumps(why, ensure_ascii=True).encode()) < MAX_BODY_BYTES
    WhyRequest.model_validate(why)  # valid: every field at its longest …
    for field in ("text", "translation", "query_token", "target", "other", "corrupt"):
        with pytest.raises(ValidationError):  # … and one character more is not
            WhyRequest.model_validate({**why, field: why[field] + "x"})


def _call(cap: int, headers: list, chunks):
    """Run BodyCap over an app that reads the whole body; -> (status, answer, chunks the app was handed)."""
    pulled, sent = [], []

    async def reader(scope, receive, send):
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    async def receive():
        chunk = next(chunks)
        pulled.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(BodyCap(reader, cap)(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body), len(pulled)


def test_an_endless_body_is_cut_at_the_cap_not_read():
    def endless():
        while True:
            yield b"x" * 1000

    status, answer, pulled = _call(10_000, [], endless())
    assert status == 413 and "is over 10000 bytes" in answer["error"] and pulled == 11  # the 11th crosses it
    status, answer, pulled = _call(10_000, [(b"content-length", b"50000000")], endless())
    assert status == 413 and pulled == 0  # refused from the header alone
    status, answer, pulled = _call(10_000, [(b"content-length", b"lots")], endless())
    assert status == 400 and "Content-Length" in answer["error"] and pulled == 0


def test_a_real_server_refuses_big_bodies_before_they_arrive(app):
    """Through uvicorn: a declared 50 MB body is refused before a byte of it is sent; an endless chunked body is
    answered 413 once it crosses the cap, while the client is still sending."""
    head = b"POST /api/tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"

    def answer_to(sock) -> bytes:
        answer, started = b"", time.monotonic()
        while not answer.rstrip().endswith(b"}") and time.monotonic() - started < 10:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer

    with serving_in_background(app) as url:
        address = url.removeprefix("http://").split(":")
        with socket.create_connection((address[0], int(address[1])), timeout=10) as sock:
            sock.sendall(head + b"Content-Length: 50000000\r\n\r\n")  # and not one byte of the body
            answer = answer_to(sock)
        assert answer.startswith(b"HTTP/1.1 413") and b'"error":"the request body is 50000000 bytes' in answer
        with socket.create_connection((address[0], int(address[1])), timeout=10) as sock:
            sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            sent = 0
            while not select.select([sock], [], [], 0.05)[0] and sent < 100 * MAX_BODY_BYTES:
                sock.sendall(b"1000\r\n" + b" " * 4096 + b"\r\n")  # 4096 bytes a chunk until the answer comes
                sent += 4096
            answer = answer_to(sock)
        assert answer.startswith(b"HTTP/1.1 413") and f"is over {MAX_BODY_BYTES} bytes".encode() in answer
        assert MAX_BODY_BYTES < sent < 10 * MAX_BODY_BYTES  # answered at the cap, long before the body's end
