"""The web app of `kqv serve`: a JSON API over kqv.serve.explorer and the page that uses it.

    GET  /                  the page (kqv/serve/static: hand-written HTML, CSS and JS, nothing from a CDN)
    GET  /api/models        the served models: id, family, layers per kind, heads, token limit, config
    POST /api/tokenize      {model, text}                                   -> tokens
    POST /api/attention     {model, text, target?, kind?, layer?, head?}    -> patterns per kind
    POST /api/next-token    {model, text, target?, temperature, top_k?, top_p?, show} -> probabilities
    POST /api/generate      {model, text, max_new_tokens, temperature, top_k?, top_p?, seed?}
                            -> a stream of JSON lines, one per token, then {"done": true, …}
    POST /api/explain       {model, text}                                   -> every tensor's shape
    GET  /openapi.json      the API described in OpenAPI

Models are named by the ids `/api/models` lists; a request never names a path. Every error is a
4xx with {"error": "one line that names the problem"}.
"""

from importlib.resources import files

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from kqv import __version__
from kqv.errors import UserError
from kqv.serve.explorer import MAX_TEXT_CHARS, Explorer
from kqv.serve.schema import (
    AttentionAnswer,
    AttentionRequest,
    GenerateRequest,
    ModelsAnswer,
    NextTokenAnswer,
    NextTokenRequest,
    TextRequest,
    TokensAnswer,
)

STATIC = files("kqv.serve") / "static"
PIZZA = "The pizza came out of the oven and it tasted good"


class Answer(Response):
    """JSON written by orjson, which writes NumPy arrays directly (float32 patterns: ~20× faster than json)."""

    media_type = "application/json"

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

    def explorer(model_id: str) -> Explorer:
        if model_id not in by_id:
            raise NotServed(f"no model {model_id!r} is served here; choose one of: {', '.join(by_id)}")
        return by_id[model_id]

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(NotServed)
    async def not_served(request: Request, exc: NotServed):
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        return JSONResponse(*validation_message(exc.errors()))

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/api/models", response_model=ModelsAnswer, response_class=Answer)
    def models():
        """The served models, in the order given on the command line; the first is the default."""
        return Answer({"models": [e.info() for e in explorers], "example": PIZZA, "max_text_chars": MAX_TEXT_CHARS})

    @app.post("/api/tokenize", response_model=TokensAnswer, response_class=Answer)
    def tokenize(request: TextRequest):
        return Answer(explorer(request.model).tokenize(request.text))

    @app.post("/api/attention", response_model=AttentionAnswer, response_class=Answer)
    def attention(request: AttentionRequest):
        """Patterns (layers, heads, queries, keys) per kind; each row sums to 1 over the keys `allowed` marks."""
        e = explorer(request.model)
        return Answer(e.attention(request.text, request.target, request.kind, request.layer, request.head))

    @app.post("/api/next-token", response_model=NextTokenAnswer, response_class=Answer)
    def next_token(request: NextTokenRequest):
        e = explorer(request.model)
        return Answer(
            e.next_token(request.text, request.target, request.temperature, request.top_k, request.top_p, request.show)
        )

    @app.post("/api/generate")
    def generate(request: GenerateRequest):
        """A stream of JSON lines (application/x-ndjson): {"token", "text", "label", "ms"} each, then {"done": true}."""
        e = explorer(request.model)
        lines = e.generate(
            request.text, request.max_new_tokens, request.temperature, request.top_k, request.top_p, request.seed
        )
        return StreamingResponse(_ndjson(lines), media_type="application/x-ndjson")

    @app.post("/api/explain", response_class=Answer)
    def explain(request: TextRequest):
        """`kqv explain` as JSON: notation, every tensor's name, shape and meaning, parameters, FLOPs."""
        return Answer(explorer(request.model).explain(request.text))

    return app


class NotServed(Exception):
    pass


def _ndjson(lines):
    for line in lines:
        yield orjson.dumps(line) + b"\n"


def validation_message(errors) -> tuple[dict, int]:
    """FastAPI's list of validation errors -> ({"error": one line}, status): 400 for broken JSON, else 422."""
    for e in errors:
        if e.get("type") == "json_invalid":
            why = e.get("ctx", {}).get("error", "parse error")
            return {"error": f"the request body is not valid JSON ({why})"}, 400
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        if e.get("type") == "missing":
            parts.append(f"{where} is missing")
        elif e.get("type") == "extra_forbidden":
            parts.append(f"{where} is not a field of this request")
        else:
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return {"error": "; ".join(parts)}, 422
