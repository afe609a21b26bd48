"""The JSON API's requests and answers, as pydantic models: FastAPI checks requests with them and
describes both in /openapi.json. Answers are written by kqv.serve.explorer as plain dicts (and NumPy
arrays, serialised by orjson); these classes are their documentation, and tests/serve/test_openapi_fuzz.py
checks that what the server sends matches them."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from kqv.generate.sampling import MAX_SEED, TEMPERATURE_FLOOR
from kqv.serve.explorer import (
    MAX_NEW_TOKENS,
    MAX_QUERY_INDEX,
    MAX_TEMPERATURE,
    MAX_TEXT_CHARS,
    MAX_WHY_STEPS,
    MAX_WHY_TOP,
    WHY_METHODS,
)

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


MAX_WORD_CHARS = 100  # a token (target, other), a word (query_token) or WORD=WORD (corrupt, twice this)


class WhyRequest(TextRequest):
    methods: list[Literal[WHY_METHODS]] | None = Field(
        None,
        min_length=1,
        max_length=len(WHY_METHODS),
        description="which methods answer: lens (logit lens), dla (direct logit attribution), patch (activation "
        "patching and head ablation), rollout (attention rollout), grad (gradient × input, integrated gradients), "
        "heads (head detectors); null = all. The raw attention from the query always comes too",
    )
    query_token: str | None = Field(
        None,
        max_length=MAX_WORD_CHARS,
        description="explain the prediction at this word (its last token, last occurrence)",
    )
    query_index: int | None = Field(
        None,
        ge=-MAX_QUERY_INDEX,
        le=MAX_QUERY_INDEX,
        description="… or at this token position (0-based; −1 = the last); default: the last token",
    )
    target: str | None = Field(
        None,
        max_length=MAX_WORD_CHARS,
        description="the one token whose logit is explained (default: the text's token after the query, else the "
        "top prediction)",
    )
    other: str | None = Field(
        None,
        max_length=MAX_WORD_CHARS,
        description="the one token it is contrasted with (default: the corrupted text's prediction, else the "
        "runner-up)",
    )
    corrupt: str | None = Field(
        None,
        max_length=2 * MAX_WORD_CHARS + 1,
        description="WORD=WORD: the corrupted text for patching is the text with WORD replaced (same token length)",
    )
    steps: int = Field(32, ge=1, le=MAX_WHY_STEPS, description="integrated-gradients steps")
    baseline: Literal["zero", "mean"] = Field("zero", description="integrated gradients' baseline embedding")
    top: int = Field(5, ge=1, le=MAX_WHY_TOP, description="the logit lens's most likely tokens per cell")
    translation: str | None = Field(
        None, max_length=MAX_TEXT_CHARS, description="translation: the decoder's text (default: the model's greedy one)"
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


# --- why (the GPT's report: kqv.inspect.why.report_dict; every float array float32 unless noted)


class WhyToken(BaseModel):
    id: int
    text: str = Field(description="the token's own text")
    label: str = Field(description="the text made visible")


class WhyLine(BaseModel):
    method: str = Field(
        description="attention, lens, dla, zero-ablation, mean-ablation, patching, rollout, grad×input, integrated "
        "gradients, heads (translation: cross-attention, rollout, grad×input, integrated gradients, lens, patching)"
    )
    summary: str = Field(description="one line of evidence")
    token: int | None = Field(description="the input position it points to, if it names one")
    score: float | None = Field(description="the number behind the line (its meaning depends on the method)")
    short: str | None = Field(None, description="the line in a few words, for a table")


class WhyAgreement(BaseModel):
    token: int | None = Field(None, description="translation: the source position most of the pointing methods name")
    word: str | None = Field(description="the word most of the pointing methods name (GPT: of `words`)")
    agree: list[str] = Field(description="the methods that name it")
    disagree: list[str] = Field(description="the methods that name another")


class Contrast(BaseModel):
    target: int
    other: int
    position: int


class LensResult(BaseModel):
    """GPT: the residual stream; translation: the decoder's (T = the decoder's positions, tgt_in)."""

    rows: list[str] = Field(description="R rows: embed, then after each block (translation: each decoder layer)")
    top_ids: list[list[list[int]]] = Field(description="(R, T, top): the most likely next tokens read at each row")
    top_tokens: list[list[list[str]]] = Field(description="(R, T, top): their labels")
    top_probs: list[list[list[float]]] = Field(description="(R, T, top): their probabilities")
    target: int | None = Field(None, description="GPT: the target's id")
    target_prob: list[list[float]] | None = Field(description="(R, T): P(target) at each row and position")
    target_rank: list[list[int]] | None = Field(None, description="GPT: (R, T) the target's rank (0 = top)")
    tgt_in: list[int] | None = Field(None, description="translation: the decoder's input, <s> + the translation")


class DLAResult(BaseModel):
    contrast: Contrast
    labels: list[str] = Field(description="the parts: embed, pos, LiHj (each head), Li mlp, biases")
    values: list[float] = Field(description="each part's direct share of the logit difference, in labels' order")
    heads: list[list[float]] = Field(description="(L, nh): the heads' shares")
    mlps: list[float] = Field(description="(L,): the MLPs' shares")
    total: float = Field(description="the sum of values")
    model_value: float = Field(description="the model's own logit difference")
    scale: float = Field(description="σ: ln_f's scale at the query, frozen")


class AblationResult(BaseModel):
    contrast: Contrast
    how: str
    clean: float = Field(description="the logit difference with nothing ablated")
    values: list[list[float]] = Field(description="(L, nh): the logit difference with that head ablated")


class PatchResult(BaseModel):
    contrast: Contrast
    clean: float = Field(description="the clean text's logit difference")
    corrupted: float = Field(description="the corrupted text's")
    resid: list[list[float]] = Field(
        description="(L, T): restored fraction, patching the residual stream into block i at a position"
    )
    heads: list[list[float]] = Field(
        description="(L, nh): restored fraction, patching one head's output at every position"
    )
    heads_by_position: list[list[list[float]]] | None = Field(description="(L, nh, T): … at one position")
    mlp: list[list[float]] = Field(description="(L, T): restored fraction, patching one MLP's output at one position")


class RolloutResult(BaseModel):
    layers: list[list[list[float]]] = Field(description="(L, T, T): the rollout up to each layer")
    final: list[list[float]] = Field(
        description="(T, T): row q, how much of each input token query q's stream mixes in"
    )


class Attribution(BaseModel):
    method: str
    scores: list[float] = Field(description="(T,): each input token's share of the logit difference")
    value: float | None
    baseline_value: float | None
    completeness_gap: float | None
    steps: int | None
    baseline: str | int | None = Field(description="zero, mean or a token id (integrated gradients only)")


class HeadsResult(BaseModel):
    previous: list[list[float]] = Field(description="(L, nh): previous-token score")
    duplicate: list[list[float]] = Field(description="(L, nh): duplicate-token score")
    induction: list[list[float]] = Field(description="(L, nh): induction score")
    first: list[list[float]] = Field(description="(L, nh): first-token score")
    ceiling: dict[str, float] = Field(description="the best score each kind can reach on the detection sequences")


class SourceAttribution(BaseModel):
    """Which source tokens each output token comes from: rows t (decoder positions), columns s (source, </s> too)."""

    src_ids: list[int]
    tgt_in: list[int] = Field(description="(T,) <s> + the translation")
    targets: list[int] = Field(description="(T,) the token row t explains")
    measure: str = Field(description="logprob or logit: what the gradient methods differentiate")
    cross: list[list[float]] = Field(description="(T, S) cross-attention, mean over layers and heads")
    cross_layers: list[list[list[float]]] = Field(description="(Ld, T, S) per decoder layer")
    encoder_rollout: list[list[float]] = Field(description="(S, S) the encoder's attention rollout")
    rollout: list[list[float]] = Field(description="(T, S) cross-attention through the encoder's rollout")
    grad_x_input: list[list[float]] = Field(description="(T, S) gradient × input on the source embeddings")
    integrated: list[list[float]] = Field(description="(T, S) integrated gradients")
    value: list[float]
    baseline_value: list[float]
    ig_gap: list[float] = Field(description="(T,) integrated gradients' completeness error")
    steps: int


class SourcePatching(BaseModel):
    clean_ids: list[int]
    corrupt_ids: list[int]
    tgt_in: list[int]
    contrast: Contrast
    clean_value: float | None
    corrupted_value: float | None
    encoder: list[list[float]] = Field(description="(L_enc, S): restored fraction, patching the encoder's stream at s")
    cross_heads: list[list[float]] = Field(
        description="(L_dec, nh): restored fraction, patching a cross-attention head"
    )


class GPTWhyResults(BaseModel):
    """Only the methods asked for (and attention, always); patch only with a corrupted text."""

    attention: list[list[list[list[float]]]] | None = Field(None, description="(L, nh, T, T): the attention patterns")
    lens: LensResult | None = None
    dla: DLAResult | None = None
    ablation: AblationResult | None = Field(None, description="patch: every head ablated in turn (older reports)")
    zero_ablation: AblationResult | None = Field(None, description="patch: every head zero-ablated in turn")
    mean_ablation: AblationResult | None = Field(None, description="patch: every head mean-ablated in turn")
    patch: PatchResult | None = None
    rollout: RolloutResult | None = None
    grad: dict[str, Attribution] | None = Field(None, description="grad×input and integrated gradients")
    heads: HeadsResult | None = None


class TranslationWhyResults(BaseModel):
    """Only the methods asked for; patch only with a corrupted source."""

    source: SourceAttribution | None = Field(None, description="cross-attention, rollout, gradients (rollout, grad)")
    lens: LensResult | None = None
    patch: SourcePatching | None = None


class WhyCommon(BaseModel):
    model: str
    text: str
    position: int = Field(
        description="the query: the position whose next-token prediction is explained (translation: a decoder position)"
    )
    target: WhyToken
    other: WhyToken
    how: str = Field(description="how the query, the target and the other were chosen")
    corrupted: str | None = Field(description="the corrupted text, if one was given")
    answers: list[WhyLine] = Field(description="one line of evidence per method, side by side")
    agreement: WhyAgreement = Field(description="GPT: the input token; translation: the source token")
    notes: list[str] = Field(description="methods skipped, and why")
    summary: str | None = Field(None, description="one line: what the prediction rests on, method by method")
    words: list[str] | None = Field(None, description="GPT: the words of the text up to the query")
    evidence: dict[str, list[float]] | None = Field(
        None, description="GPT: each pointing method's scores of `words`, as shares of the row's |score| (float64)"
    )


class GPTWhyAnswer(WhyCommon):
    family: Literal["gpt"]
    tokens: list[str] = Field(description="T token labels")
    results: GPTWhyResults


class TranslationWhyAnswer(WhyCommon):
    family: Literal["translation"]
    source_tokens: list[str] = Field(description="S source token labels, </s> included")
    translation: str = Field(description="the decoder's text explained (the model's greedy one unless given)")
    target_tokens: list[str] = Field(description="T decoder input labels: <s> + the translation")
    results: TranslationWhyResults


WhyAnswer = Annotated[GPTWhyAnswer | TranslationWhyAnswer, Field(discriminator="family")]
