"""The JSON API's requests and answers, as pydantic models: FastAPI checks requests with them and
describes both in /openapi.json. Answers are written by kqv.serve.explorer as plain dicts (and NumPy
arrays, serialised by orjson); these classes are their documentation, and tests/serve/test_openapi_fuzz.py
checks that what the server sends matches them."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kqv.generate.sampling import MAX_SEED, TEMPERATURE_FLOOR
from kqv.serve.explorer import MAX_NEW_TOKENS, MAX_TEMPERATURE, MAX_TEXT_CHARS

# A character that str.strip() keeps: the explorer refuses texts that are empty once stripped. Written out
# (not \S, whose meaning differs between pydantic's Rust regex, ECMA-262 and Python) with only \xHH and
# \uHHHH escapes, which mean the same code points in all three; tests/serve/test_schema.py checks every code point.
NOT_ONLY_SPACE = r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


# --- requests


class TextRequest(Strict):
    model: str = Field(description="a model id from GET /api/models")
    text: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=NOT_ONLY_SPACE,
        description="the text (the source sentence, for translation): not empty, not only spaces",
    )


class AttentionRequest(TextRequest):
    target: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="translation: the decoder's text")
    kind: str | None = Field(None, description="self (GPT); encoder, decoder or cross (translation); default all")
    layer: int | None = Field(None, description="only this layer (0-based); default all")
    head: int | None = Field(None, description="only this head (0-based); default all")


class Sampling(Strict):
    temperature: float = Field(
        1.0,
        ge=0.0,
        le=MAX_TEMPERATURE,
        allow_inf_nan=False,
        description=f"0 = always the most likely token (so is anything below {TEMPERATURE_FLOOR})",
    )
    top_k: int | None = Field(None, ge=1, description="keep the k most likely tokens; null = all")
    top_p: float | None = Field(
        None, gt=0.0, le=1.0, allow_inf_nan=False, description="keep the most likely tokens up to mass p"
    )


class NextTokenRequest(TextRequest, Sampling):
    target: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="translation: the target so far")
    show: int = Field(20, ge=1, le=200, description="how many of the most likely tokens to list")


class GenerateRequest(TextRequest, Sampling):
    max_new_tokens: int = Field(100, ge=1, le=MAX_NEW_TOKENS)
    # lt, not le: /openapi.json writes bounds as floats, and float(2^64 − 1) is 2^64, while 2^64 itself is exact
    seed: int | None = Field(
        None, ge=0, lt=MAX_SEED + 1, description="seed of the draws (0 … 2^64 − 1); null = a new one"
    )


# --- answers


class Error(Strict):
    """What every 4xx carries."""

    error: str = Field(description="one line naming the problem and, where it helps, what to do")


class ModelInfo(BaseModel):
    id: str = Field(description="what requests name the model by")
    name: str = Field(description="the run directory, or the preset with random weights")
    family: str = Field(description="gpt or translation")
    kinds: list[str] = Field(description="kinds of attention: self, or encoder, decoder, cross")
    layers: dict[str, int] = Field(description="layers per kind")
    n_head: int
    max_tokens: int = Field(description="the longest input: block_size (GPT) or max_len (translation)")
    vocab_size: int
    tokenizer: str = Field(description="char or bpe")
    parameters: int
    config: dict = Field(description="the model's config.json table")


class ModelsAnswer(BaseModel):
    models: list[ModelInfo]
    example: str = Field(description="a sentence to start with")
    max_text_chars: int


class Token(BaseModel):
    text: str = Field(description="the token's own text (a BPE piece keeps its leading space)")
    label: str = Field(description="the text made visible: ␣ for a space, \\n for a newline")


class TokenWithId(Token):
    id: int


class TokensAnswer(BaseModel):
    model: str
    tokens: list[TokenWithId]


class AttentionMaps(BaseModel):
    query_tokens: list[Token] = Field(description="Tq tokens that look (rows)")
    key_tokens: list[Token] = Field(description="Tk tokens looked at (columns)")
    mask: str = Field(description="the mask's name: causal, none, …")
    allowed: list[list[bool]] = Field(description="(Tq, Tk): false where the mask hides a key from a query")
    default_query: int = Field(description="the query a page shows first: the last real token")
    layers: list[int] = Field(description="the layers in `patterns`, in order")
    heads: list[int] = Field(description="the heads in `patterns`, in order")
    patterns: list[list[list[list[float]]]] = Field(
        description="(layers, heads, Tq, Tk) float32: row q is query q's distribution over the keys (sums to 1)"
    )


class AttentionAnswer(BaseModel):
    model: str
    family: str
    target: str | None = Field(description="translation: the decoder's text used (the model's own if none was given)")
    attention: dict[str, AttentionMaps] = Field(description="per kind of attention")


class NextTokenRow(TokenWithId):
    prob: float = Field(description="probability sampling draws with (temperature, top-k, top-p applied)")
    raw: float = Field(description="the model's own softmax (temperature 1, nothing removed)")


class NextTokenAnswer(BaseModel):
    model: str
    settings: dict
    kept: int = Field(description="tokens sampling can still draw")
    vocab_size: int
    entropy: float = Field(description="of the sampling distribution, in nats")
    tokens: list[NextTokenRow] = Field(description="the most likely tokens, most likely first")


class GenerateToken(BaseModel):
    token: int = Field(description="the token's id")
    text: str = Field(description="the text this token completes (empty while a character is unfinished)")
    label: str = Field(description="the token's own piece, made visible")
    ms: float = Field(description="milliseconds this token took")


class GenerateDone(BaseModel):
    done: Literal[True]
    text: str = Field(description="all the new text")
    rest: str = Field(description="text no token line carried (an unfinished character at the end), if any")
    tokens: int
    tokens_per_s: float | None


class Symbol(BaseModel):
    value: int
    meaning: str


class TensorShape(BaseModel):
    name: str = Field(description="the hook point, e.g. blocks.0.attn.pattern")
    shape: list[int]
    meaning: str


class ParameterRow(BaseModel):
    module: str
    shapes: dict[str, list[int]] = Field(description="parameter name (weight, bias, …) -> shape")
    count: int = Field(description="0 for a matrix counted under another module (tied)")
    note: str


class FlopRow(BaseModel):
    part: str
    per: str = Field(description="token, source token or target token")
    formula: str
    flops: int = Field(description="at this input's length")
    flops_at_limit: int = Field(description="at the longest input the model takes")


class ExplainAnswer(BaseModel):
    model: str
    family: str
    notation: dict[str, Symbol] = Field(description="the letters of the shapes (B, T, C, nh, hs, V, …)")
    tensors: list[TensorShape] = Field(description="every hook point of one forward pass, in order")
    parameters: list[ParameterRow]
    total_parameters: int
    flops: list[FlopRow]
    limit: int = Field(description="the length flops_at_limit assumes")
