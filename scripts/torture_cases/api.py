"""Torture part: `kqv serve`'s JSON API, in-process through FastAPI's TestClient, on the `tiny` GPT preset and the
`translate/tiny` translation preset (random weights, no training).

An error survives when it is a 4xx with the expected status and a body that is exactly {"error": str}, one line,
no "Traceback"; a success survives when it is a 200 with the right answer; a stream survives when, once 200,
every line is JSON and the last is {"done": true, …} with as many token lines as it counts. Cases: bodies that
are not JSON (invalid UTF-8, deep nesting, truncated, trailing bytes, huge numbers) or of the wrong shape;
bodies over the cap (with and without Content-Length); tiny, non-finite and out-of-range temperatures; seeds
out of 0 … 2^64 − 1; unknown and path-like model ids (which must not touch the file system); unknown routes
and wrong methods; and (more in full mode) random mutations of valid bodies, which may be 200 or a 4xx but
never a 5xx.
"""

import json
import pathlib
import random
import sys
from contextlib import contextmanager

from kqv.families import load_subject
from kqv.generate.sampling import MAX_SEED, TEMPERATURE_FLOOR
from kqv.serve.app import MAX_BODY_BYTES, create_app
from kqv.serve.explorer import Explorer

JSON = {"content-type": "application/json"}
POSTS = ["/api/tokenize", "/api/attention", "/api/next-token", "/api/generate", "/api/explain"]
TEXTS = {"gpt": "ROMEO:", "translation": "And God said"}


def scenarios(quick: bool, work: pathlib.Path) -> list[tuple[str, int, int, list[str]]]:
    """Run this part's scenarios; -> rows (scenario name, tried, survived, notes on each failure)."""
    try:
        from fastapi.testclient import TestClient
    except ImportError as exc:  # httpx comes with kqv's test extras
        return [("api: all", 1, 0, [f"cannot run: {exc}; pip install -e '.[test]'"])]
    import torch

    torch.set_num_threads(1)
    served = [Explorer("gpt", load_subject(preset="tiny", seed=0))]
    served.append(Explorer("translation", load_subject(preset="translate/tiny", seed=0)))
    client = TestClient(create_app(served), raise_server_exceptions=False)
    parts = [
        ("api: broken JSON bodies", broken_bodies),
        ("api: bodies of the wrong shape", wrong_shapes),
        ("api: bodies over the cap", oversized),
        ("api: extreme temperatures", temperatures),
        ("api: seeds out of range", seeds),
        ("api: unknown model ids", unknown_models),
        ("api: path-like model ids", path_like_models),
        ("api: unknown routes and methods", routes),
        ("api: streams complete", streams),
        ("api: mutated bodies", lambda c: mutated(c, 60 if quick else 600)),
    ]
    rows = []
    for name, run in parts:
        outcomes = run(client)
        notes = [note for note in outcomes if note]
        rows.append((name, len(outcomes), len(outcomes) - len(notes), notes))
    return rows


# --- what survives


def error_note(response, status: int, says: str = "") -> str:
    """'' when the response is `status` with exactly {"error": one line} (containing `says`), else why not."""
    what = f"{response.request.method} {response.request.url.path}"
    if response.status_code != status:
        return f"{what}: {response.status_code} instead of {status}: {response.text[:200]!r}"
    try:
        answer = response.json()
    except ValueError:
        return f"{what}: not JSON: {response.text[:200]!r}"
    if not (isinstance(answer, dict) and list(answer) == ["error"] and isinstance(answer["error"], str)):
        return f"{what}: not exactly {{'error': str}}: {response.text[:200]!r}"
    line = answer["error"]
    if not line or line.splitlines() != [line] or "Traceback" in line:
        return f"{what}: not one line: {line[:200]!r}"
    if says not in line:
        return f"{what}: {line[:200]!r} does not say {says!r}"
    return ""


def stream_note(client, body: dict) -> tuple[str, list[int]]:
    """('' or why not, token ids) for POST /api/generate: a 200 whose lines end with a counted {"done": true}."""
    with client.stream("POST", "/api/generate", json=body) as response:
        if response.status_code != 200:
            return f"generate {body}: {response.status_code}: {response.read()[:200]!r}", []
        raw = [line for line in response.iter_lines() if line]
    try:
        lines = [json.loads(line) for line in raw]
    except ValueError:
        return f"generate {body}: a line is not JSON: {raw[-1][:200]!r}", []
    if not lines or lines[-1].get("done") is not True:
        return f"generate {body}: the stream stopped without its done line (last: {raw[-1:]!r})", []
    tokens = [line["token"] for line in lines[:-1]]
    if lines[-1]["tokens"] != len(tokens):
        return f"generate {body}: done counts {lines[-1]['tokens']} tokens, {len(tokens)} came", []
    return "", tokens


def post(client, path: str, body: bytes, headers=JSON):
    return client.post(path, content=body, headers=headers)


# --- scenarios: each returns one note per case ('' = survived)


def broken_bodies(client) -> list[str]:
    cases = [
        (b'{"model": "gpt", "text": "\xff\xfe"}', "not UTF-8"),
        (b'{"model": "gpt", "text": "\xc3"}', "not UTF-8"),
        (b"[" * 1000 + b"]" * 1000, "nests JSON too deeply"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nests JSON too deeply"),
        (b'{"model": "gpt", "text": ', "not valid JSON"),
        (b'{"model": "gpt", "text": "ROMEO:"', "not valid JSON"),
        (b'{"model": "gpt", "text": "ROMEO:"} {}', "not valid JSON"),
        (b"{'model': 'gpt'}", "not valid JSON"),
        (b'{"model": "gpt", "text": "ROMEO:", "show": ' + b"7" * 5000 + b"}", "too many digits"),
    ]
    return [error_note(post(client, path, body), 400, says) for body, says in cases for path in POSTS]


def wrong_shapes(client) -> list[str]:
    cases = [
        (b"", JSON, "empty"),
        (b"null", JSON, "JSON object"),
        (b"[1, 2]", JSON, "JSON object"),
        (b'"ROMEO:"', JSON, "JSON object"),
        (b'{"model": "gpt", "text": "ROMEO:"}', {"content-type": "text/plain"}, "Content-Type"),
        (b'{"model": "gpt", "text": ["ROMEO:"]}', JSON, "text"),
        (b'{"model": 7, "text": "ROMEO:"}', JSON, "model"),
        (b'{"model": "gpt"}', JSON, "text is missing"),
        (b'{"model": "gpt", "text": "   "}', JSON, "empty"),
        (b'{"model": "gpt", "text": "\\ud800"}', JSON, "text"),
        (b'{"model": "gpt", "text": "ROMEO:", "txet": 1}', JSON, "txet is not a field"),
    ]
    return [error_note(post(client, path, body, headers), 422, says) for body, headers, says in cases for path in POSTS]


def oversized(client) -> list[str]:
    body = json.dumps({"model": "gpt", "text": "ROMEO:"}).encode()
    exactly = body + b" " * (MAX_BODY_BYTES - len(body))
    notes = []
    answer = post(client, "/api/tokenize", exactly)
    notes.append("" if answer.status_code == 200 else f"a body of exactly the cap: {answer.status_code}")
    for size in (MAX_BODY_BYTES + 1, 50_000_000):
        over = exactly + b" " * (size - len(exactly))
        notes.append(error_note(post(client, "/api/tokenize", over), 413, f"is {size} bytes"))
        chunks = (over[i : i + 65536] for i in range(0, len(over), 65536))  # no Content-Length: chunked
        notes.append(error_note(post(client, "/api/generate", chunks), 413, f"over {MAX_BODY_BYTES} bytes"))
    return notes


def temperatures(client) -> list[str]:
    notes = []
    for model, text in TEXTS.items():
        for temperature in (0.0, 5e-324, 1e-300, TEMPERATURE_FLOOR / 2, 2 * TEMPERATURE_FLOOR, 1.0, 10.0):
            answer = client.post("/api/next-token", json={"model": model, "text": text, "temperature": temperature})
            notes.append(next_token_note(answer, temperature))
            note, _ = stream_note(
                client, {"model": model, "text": text, "max_new_tokens": 8, "temperature": temperature}
            )
            notes.append(note)
        for number, says in [(b"NaN", "finite"), (b"Infinity", "finite"), (b"-Infinity", "finite"),
                             (b"1e999", "finite"), (b"-1", "temperature"), (b"10.5", "temperature")]:  # fmt: skip
            body = b'{"model": "%s", "text": "%s", "temperature": %s}' % (model.encode(), text.encode(), number)
            for path in ("/api/next-token", "/api/generate"):
                notes.append(error_note(post(client, path, body), 422, says))
    return notes


def next_token_note(answer, temperature: float) -> str:
    if answer.status_code != 200:
        return f"next-token at temperature {temperature}: {answer.status_code} {answer.text[:200]!r}"
    got = answer.json()
    probs = [row["prob"] for row in got["tokens"]]
    if any(not isinstance(p, float) or not 0.0 <= p <= 1.0 for p in probs) or got["kept"] < 1:
        return f"next-token at temperature {temperature}: kept {got['kept']}, probabilities {probs[:5]}"
    if temperature < TEMPERATURE_FLOOR and (got["kept"] != 1 or max(probs) != 1.0):
        return f"next-token at temperature {temperature} (greedy): kept {got['kept']}, top {max(probs)}"
    return ""


def seeds(client) -> list[str]:
    notes = []
    for model, text in TEXTS.items():
        body = {"model": model, "text": text, "max_new_tokens": 6, "seed": MAX_SEED}
        note, first = stream_note(client, body)
        again = stream_note(client, body)[1]
        notes.append(note or ("" if first == again else f"seed 2^64 − 1 drew {first}, then {again}"))
        for seed in (MAX_SEED + 1, -1, 10**30, -(10**30)):
            answer = client.post("/api/generate", json={**body, "seed": seed})
            notes.append(error_note(answer, 422, "seed"))
        notes.append(error_note(post(client, "/api/generate", b'{"model": "gpt", "text": "x", "seed": 1.5}'), 422))
    return notes


def unknown_models(client) -> list[str]:
    ids = ["nope", "", "GPT", " gpt", "gpt\n", "x" * 10_000, "\u202egpt"]
    return [
        error_note(client.post(path, json={"model": model, "text": "ROMEO:"}), 404, "choose one of: gpt, translation")
        for model in ids
        for path in POSTS
    ]


def path_like_models(client) -> list[str]:
    ids = ["../../etc/passwd", "/etc/passwd", "runs/gpt", "./gpt", "C:\\Windows\\win.ini", "file:///etc/passwd", "~"]
    client.post("/api/tokenize", json={"model": "nope", "text": "ROMEO:"})  # warm up: lazy imports happen now
    notes = []
    with file_system_events() as events:
        for model in ids:
            for path in POSTS:
                answer = client.post(path, json={"model": model, "text": "ROMEO:"})
                note = error_note(answer, 404, "no model")
                notes.append(note or ("root:" in answer.text and f"{path} with {model!r} shows a file") or "")
    if events:
        notes.append(f"requests naming paths touched the file system: {events[:3]}")
    return notes


def routes(client) -> list[str]:
    cases = [
        ("GET", "/nope", 404),
        ("POST", "/api/nope", 404),
        ("GET", "/api", 404),
        ("GET", "/static/nope.js", 404),
        ("GET", "/static/%2e%2e/%2e%2e/etc/passwd", 404),
        ("GET", "/static/..%2f..%2fetc%2fpasswd", 404),
        ("GET", "/api/tokenize", 405),
        ("PUT", "/api/generate", 405),
        ("DELETE", "/api/models", 405),
        ("PATCH", "/", 405),
        ("POST", "/static/explorer.js", 405),
    ]
    return [error_note(client.request(method, path), status) for method, path, status in cases]


def streams(client) -> list[str]:
    notes = []
    never = {0, 1}  # translate/tiny's <pad> and <s>
    settings = [{"temperature": 0}, {"temperature": 1.0, "seed": 3}, {"temperature": 2.0, "top_k": 5, "seed": 4},
                {"temperature": 0.7, "top_p": 0.5, "seed": 5}, {"temperature": 3.0, "seed": 6}]  # fmt: skip
    for model, text in TEXTS.items():
        for extra in settings:
            note, tokens = stream_note(client, {"model": model, "text": text, "max_new_tokens": 40, **extra})
            if not note and model == "translation" and never & set(tokens):
                note = f"translation drew <pad> or <s> with {extra}: {tokens}"
            notes.append(note)
    return notes


def mutated(client, n: int) -> list[str]:
    """Valid bodies with bytes flipped, cut, doubled or inserted: a 200 or a 4xx of the right shape, never a 5xx."""
    rng = random.Random(0)
    valid = [
        (path, json.dumps({"model": model, "text": text, **extra}).encode())
        for model, text in TEXTS.items()
        for path, extra in [
            ("/api/tokenize", {}),
            ("/api/attention", {"layer": 0}),
            ("/api/explain", {}),
            ("/api/next-token", {"temperature": 0.5, "top_k": 3}),
            ("/api/generate", {"max_new_tokens": 3, "seed": 1}),
        ]  # fmt: skip
    ]
    notes = []
    for _ in range(n):
        path, body = rng.choice(valid)
        body = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(body))
            change = rng.choice(["flip", "cut", "double", "insert"])
            if change == "flip":
                body[at] = rng.randrange(256)
            elif change == "cut":
                del body[at : at + rng.randint(1, 8)]
            elif change == "double":
                body[at:at] = body[at : at + rng.randint(1, 8)]
            else:
                body[at:at] = rng.choice([b"\\", b'"', b"{", b"]", b"\x00", b"\xe2\x80\xa8", b"NaN", b"1e999", b"-"])
        answer = post(client, path, bytes(body))
        if answer.status_code == 200:
            notes.append("" if answer.text.strip() else f"{path} {bytes(body)!r}: an empty 200")
        elif answer.status_code in (400, 404, 413, 422):
            notes.append(error_note(answer, answer.status_code))
        else:
            notes.append(f"{path} {bytes(body)[:200]!r}: {answer.status_code} {answer.text[:200]!r}")
    return notes


# --- watching the file system


_recorders: list[list] = []
_hooked = False


@contextmanager
def file_system_events():
    """File-system audit events (open, os.*, shutil.*) raised on any thread while the block runs."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)  # permanent; records nothing outside this block
        _hooked = True
    events: list = []
    _recorders.append(events)
    try:
        yield events
    finally:
        _recorders.remove(events)


def _audit(event: str, args) -> None:
    if _recorders and (event == "open" or event.startswith(("os.", "shutil.", "glob."))):
        for recorder in _recorders:
            recorder.append((event, str(args)[:120]))
