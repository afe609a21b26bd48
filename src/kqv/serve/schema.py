"""The JSON API's requests and answers, as pydantic models: FastAPI checks requests with them and
describes both in /openapi.json. Answers are written by kqv.serve.explorer as plain dicts (and NumPy
arrays, serialised by orjson); these classes are their documentation."""

from pydantic import BaseModel, ConfigDict, Field

from kqv.serve.explorer import MAX_NEW_TOKENS, MAX_TEXT_CHARS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


# --- requests


class TextRequest(Strict):
    model: str = Field(description="a model id from GET /api/models")
    text: str = Field(max_length=MAX_TEXT_CHARS, description="the text (the source sentence, for translation)")


class AttentionRequest(TextRequest):
    target: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="translation: the decoder's text")
    kind: str | None = Field(None, description="self (GPT); encoder, decoder or cross (translation); default all")
    layer: int | None = Field(None, description="only this layer (0-based); default all")
    head: int | None = Field(None, description="only this head (0-based); default all")


class Sampling(Strict):
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="0 = always the most likely token")
    top_k: int | None = Field(None, ge=1, description="keep the k most likely tokens; null = all")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="keep the most likely tokens up to mass p")


class NextTokenRequest(TextRequest, Sampling):
    target: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="translation: the target so far")
    show: int = Field(20, ge=1, le=200, description="how many of the most likely tokens to list")


class GenerateRequest(TextRequest, Sampling):
    max_new_tokens: int = Field(100, ge=1, le=MAX_NEW_TOKENS)
    seed: int | None = Field(None, description="seed of the draws; null = a new one each time")


# --- answers


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
