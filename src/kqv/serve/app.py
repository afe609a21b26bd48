"""The web app of `kqv serve`: a JSON API over kqv.serve.explorer and the page that uses it.

    GET  /                  the page (kqv/serve/static: hand-written HTML, CSS and JS, nothing from a CDN)
    GET  /api/models        the served models: id, family, layers per kind, heads, token limit, config
    POST /api/tokenize      {model, text}                                   -> tokens
    POST /api/attention     {model, text, target?, kind?, layer?, head?}    -> patterns per kind
    POST /api/next-token    {model, text, target?, temperature, top_k?, top_p?, show} -> probabilities
    POST /api/generate      {model, text, max_new_tokens, temperature, top_k?, top_p?, seed?}
                            -> a stream of JSON lines, one per token, then {"done": true, …}
    POST /api/explain       {model, text}                                   -> every tensor's shape
    POST /api/why           {model, text, methods?, query_token?, query_index?, target?, other?, corrupt?,
                             steps?, baseline?, top?, translation?}
                            -> `kqv why --json`: one prediction explained by every method
    GET  /openapi.json      the API described in OpenAPI

Models are named by the ids `/api/models` lists; a request never names a path. Every error is a
4xx with {"error": "one line that names the problem"}: 400 a body that is not JSON, 404 an unknown
model or route, 405 a wrong method, 413 a body over MAX_BODY_BYTES, 422 a field out of bounds.
A generation is checked, and its first token computed, before its stream starts, so a bad
request never gets a 200.
"""

from importlib.resources import files
from itertools import chain

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from kqv import __version__
from kqv.errors import UserError
from kqv.families.base import PIZZA
from kqv.serve.explorer import MAX_TEXT_CHARS, Explorer
from kqv.serve.schema import (
    AttentionAnswer,
    AttentionRequest,
    Error,
    ExplainAnswer,
    GenerateDone,
    GenerateRequest,
    GenerateToken,
    ModelsAnswer,
    NextTokenAnswer,
    NextTokenRequest,
    TextRequest,
    TokensAnswer,
    WhyAnswer,
    WhyRequest,
)

STATIC = files("kqv.serve") / "static"
# The largest valid request: a text and a target (/api/why: a translation) of MAX_TEXT_CHARS characters each,
# every one JSON-escaped as a surrogate pair (\ud83d\ude00: 12 bytes), is 48,000 bytes and a few fields (/api/why's
# short ones: about 6,000 more); 64 KiB leaves room.
MAX_BODY_BYTES = 64 * 1024
NDJSON = "application/x-ndjson"  # one JSON object per line
MAX_ERROR_CHARS = 500  # an error line quotes the request (a model id, a path): never all of it

ERRORS = {
    400: "the body is not JSON (not UTF-8, broken, nested too deeply)",
    404: "no such model is served here",
    413: f"the body is over {MAX_BODY_BYTES} bytes",
    422: "a field is missing, of the wrong type or out of bounds, or the text does not fit the model",
}


class Answer(JSONResponse):
    """JSON written by orjson, which writes NumPy arrays directly (float32 patterns: ~20× faster than json)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def create_app(explorers: list[Explorer]) -> FastAPI:
    """The app serving these models (ids must be unique)."""
    by_id = {e.id: e for e in explorers}
    if len(by_id) != len(explorers):
        raise ValueError("model ids must be unique")
    app = FastAPI(
        title="kqv serve",
        version=__version__,
        description="Look inside kqv models: tokens, attention of every layer and head, next-token "
        'probabilities, generation. Every error answers {"error": "…"} with a 4xx status.',
        docs_url=None,  # the interactive docs load their scripts from a CDN; /openapi.json stays
        redoc_url=None,
    )
    app.add_middleware(BodyCap, cap=MAX_BODY_BYTES)

    def explorer(model_id: str) -> Explorer:
        if model_id not in by_id:
            served = f"choose one of: {', '.join(by_id)}" if by_id else "none is served"
            raise NotServed(f"no model {_shorten(repr(model_id), 80)} is served here; {served}")
        return by_id[model_id]

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return error_answer(str(exc), 422)

    @app.exception_handler(NotServed)
    async def not_served(request: Request, exc: NotServed):
        return error_answer(str(exc), 404)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        return error_answer(*validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        """What starlette and FastAPI raise themselves: unknown routes, wrong methods, unreadable bodies."""
        return error_answer(http_message(request, exc), exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):  # never meant to happen: still one line, not a traceback
        return error_answer(f"kqv failed on this request ({type(exc).__name__}: {exc}); please report it", 500)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/api/models", response_model=ModelsAnswer, response_class=Answer)
    def models():
        """The served models, in the order given on the command line; the first is the default."""
        return Answer({"models": [e.info() for e in explorers], "example": PIZZA, "max_text_chars": MAX_TEXT_CHARS})

    @app.post("/api/tokenize", response_model=TokensAnswer, response_class=Answer, responses=_errors())
    def tokenize(request: TextRequest):
        return Answer(explorer(request.model).tokenize(request.text))

    @app.post("/api/attention", response_model=AttentionAnswer, response_class=Answer, responses=_errors())
    def attention(request: AttentionRequest):
        """Patterns (layers, heads, queries, keys) per kind; each row sums to 1 over the keys `allowed` marks."""
        e = explorer(request.model)
        return Answer(e.attention(request.text, request.target, request.kind, request.layer, request.head))

    @app.post("/api/next-token", response_model=NextTokenAnswer, response_class=Answer, responses=_errors())
    def next_token(request: NextTokenRequest):
        e = explorer(request.model)
        return Answer(
            e.next_token(request.text, request.target, request.temperature, request.top_k, request.top_p, request.show)
        )

    @app.post(
        "/api/generate",
        response_class=StreamingResponse,  # no media type of its own, so FastAPI documents exactly _lines()
        responses={**_lines(), **_errors()},
    )
    def generate(request: GenerateRequest):
        """A stream of JSON lines (application/x-ndjson): {"token", "text", "label", "ms"} each, then {"done": true}."""
        e = explorer(request.model)
        lines = e.generate(
            request.text, request.max_new_tokens, request.temperature, request.top_k, request.top_p, request.seed
        )
        first = next(lines)  # anything that fails, fails here: before the 200 is sent
        return StreamingResponse(_ndjson(chain([first], lines)), media_type=NDJSON)

    @app.post("/api/explain", response_model=ExplainAnswer, response_class=Answer, responses=_errors())
    def explain(request: TextRequest):
        """`kqv explain` as JSON: notation, every tensor's name, shape and meaning, parameters, FLOPs."""
        return Answer(explorer(request.model).explain(request.text))

    @app.post("/api/why", response_model=WhyAnswer, response_class=Answer, responses=_errors())
    def why(request: WhyRequest):
        """`kqv why` as JSON: the prediction after the query position, explained by each method side by side."""
        e = explorer(request.model)
        options = request.model_dump(exclude={"model", "text", "methods"})
        return Answer(e.why(request.text, request.methods, **options))

    app.openapi = lambda: _openapi(app, list(by_id), [GenerateToken, GenerateDone, Error])
    return app


class NotServed(Exception):
    pass


def _ndjson(lines):
    for line in lines:
        yield orjson.dumps(line) + b"\n"


# --- errors: one line each


def error_answer(message: str, status: int, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": _shorten(" ".join(message.split()))}, status_code=status, headers=headers)


def _shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def http_message(request: Request, exc: HTTPException) -> str:
    """Starlette's HTTPException ("Not Found", "Method Not Allowed", a body FastAPI could not parse) as one line."""
    path = _shorten(repr(request.url.path), 80)
    if exc.status_code == 404:
        return f"nothing at {path}: the page is at / and the API's routes are listed in /openapi.json"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "another method")
        return f"{request.method} is not allowed on {path}; use {allowed}"
    if exc.status_code == 400 and exc.__cause__ is not None:
        return unreadable_body(exc.__cause__)
    return f"{exc.status_code}: {exc.detail}"


def unreadable_body(cause: BaseException) -> str:
    """Why FastAPI's json.loads gave up on a body, other than broken JSON syntax (which is a JSONDecodeError)."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the request body is not UTF-8 (byte {cause.object[cause.start]:#04x} at {cause.start}); send JSON text"
    if isinstance(cause, RecursionError):
        return "the request body nests JSON too deeply to read; send one JSON object of plain fields"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number in the request body has too many digits to read"
    return f"the request body could not be read as JSON ({type(cause).__name__}); send one JSON object"


def validation_message(errors) -> tuple[str, int]:
    """FastAPI's list of validation errors -> (one line, status): 400 for broken JSON, else 422."""
    for e in errors:
        if e.get("type") == "json_invalid":
            why = e.get("ctx", {}).get("error", "parse error")
            at = e.get("loc", ("body",))[-1]
            return f"the request body is not valid JSON ({why} at character {at})", 400
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        kind = e.get("type")
        if kind == "missing" and where == "body":
            parts.append('the request body is empty; send a JSON object such as {"model": "…", "text": "…"}')
        elif kind == "missing":
            parts.append(f"{where} is missing")
        elif kind == "extra_forbidden":
            parts.append(f"{where} is not a field of this request")
        elif where == "body" and kind in ("model_attributes_type", "dict_type", "model_type"):
            parts.append('the request body must be a JSON object such as {"model": "…", "text": "…"}, sent with '
                         "Content-Type: application/json")  # fmt: skip
        elif kind in ("string_too_short", "string_pattern_mismatch"):
            parts.append(f"{where} is empty (or only spaces); type a sentence, e.g. {PIZZA}")
        else:
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts), 422


class BodyCap:
    """ASGI middleware: a request body over `cap` bytes gets a 413 before more of it is read.

    A Content-Length over the cap is refused before any byte of the body is read; a body without
    one (chunked) is counted as it arrives and refused at the chunk that crosses the cap.
    """

    def __init__(self, app, cap: int):
        self.app, self.cap = app, cap

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                refusal = error_answer("the Content-Length header is not a number of bytes", 400)
                return await refusal(scope, receive, send)
            if int(declared) > self.cap:
                return await self._refuse(scope, receive, send, f"is {int(declared)} bytes")
        received, over, started = 0, False, False

        async def counted():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.cap:
                    over = True
                    raise BodyTooLarge
            return message

        async def send_unless_over(message):
            nonlocal started
            if over and not started:
                return  # the app's answer to a body it never got whole: replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, send_unless_over)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self._refuse(scope, receive, send, f"is over {self.cap} bytes")

    async def _refuse(self, scope, receive, send, size: str):
        message = f"the request body {size}; at most {self.cap} bytes ({self.cap // 1024} KiB) are read, send less"
        await error_answer(message, 413, {"Connection": "close"})(scope, receive, send)


class BodyTooLarge(Exception):
    pass


# --- the OpenAPI document


def _errors() -> dict:
    """The error answers of a POST route, all {"error": "…"} (JSON even when the route streams lines)."""
    return {
        code: {"description": why, "content": {"application/json": {"schema": _ref(Error)}}}
        for code, why in ERRORS.items()
    }


def _lines() -> dict:
    """The 200 of POST /api/generate: JSON lines, each a GenerateToken but the last, a GenerateDone."""
    schema = {"anyOf": [_ref(GenerateToken), _ref(GenerateDone)]}
    description = "one JSON object per line: a GenerateToken per new token, then a GenerateDone"
    return {200: {"description": description, "content": {NDJSON: {"schema": schema}}}}


def _ref(model) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _openapi(app: FastAPI, model_ids: list[str], extra_models: list) -> dict:
    """FastAPI's document, plus the schemas only referenced by hand, and `model` listing the ids served."""
    if app.openapi_schema is None:
        spec = FastAPI.openapi(app)
        schemas = spec["components"]["schemas"]
        for model in extra_models:  # flat models: no $defs of their own
            schemas[model.__name__] = model.model_json_schema()
        for request in (TextRequest, AttentionRequest, NextTokenRequest, GenerateRequest, WhyRequest):
            if model_ids:
                schemas[request.__name__]["properties"]["model"]["enum"] = model_ids
        app.openapi_schema = spec
    return app.openapi_schema
