"""What `kqv serve` can do with one model, as plain Python: tokenize, attention, next token, generate, explain, why.

The web layer (kqv.serve.app) only parses requests and turns these dicts into JSON; everything a
page shows is computed here, from the same library functions `kqv inspect`, `kqv explain` and
`kqv gpt sample` use.

One `Explorer` per served model. Requests arrive on many threads at once; a lock around each
forward pass keeps them from meeting inside the model (the activation cache behind `explain`
puts hooks on it for the length of one pass). Generation takes the lock once per token, so a
long generation does not hold up other requests; `why` holds it for all of its passes (patching and
ablation hook the model, the gradient methods take gradients: no inference mode there).

Sampling follows kqv.generate.sampling: a temperature below TEMPERATURE_FLOOR is greedy (all mass
on the argmax), and every value is checked before anything is computed, so a bad generation
request fails before its stream starts. A translation never draws <pad> or <s> (as beam search).
"""

import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass

import numpy as np
import torch

from kqv.errors import UserError
from kqv.families import Family, Subject
from kqv.generate.sampling import check_sampling_values, filter_logits, is_greedy
from kqv.generate.sampling import next_token as sample_next_token
from kqv.inspect.attention import token_label, token_texts
from kqv.inspect.patterns import AttentionMaps

MAX_TEXT_CHARS = 2000  # longer request texts are refused before they reach a tokenizer
MAX_NEW_TOKENS = 500
MAX_TEMPERATURE = 10.0
WHY_METHODS = ("lens", "dla", "patch", "rollout", "grad", "heads")  # kqv.inspect.why.METHODS, in its order
MAX_WHY_STEPS = 256  # integrated-gradients steps: each a forward and backward pass
MAX_WHY_TOP = 20  # the logit lens's top-k per cell
MAX_QUERY_INDEX = 4 * MAX_TEXT_CHARS  # a text of MAX_TEXT_CHARS characters is at most this many byte tokens


@dataclass
class Explorer:
    """One served model and the lock its forward passes take turns on; what differs between a GPT and a
    translation model is asked of its family (kqv.families)."""

    id: str
    subject: Subject
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what the model is

    @property
    def family(self) -> Family:
        return self.subject.family

    @property
    def config(self):
        return self.subject.model.config

    @property
    def max_tokens(self) -> int:
        """The longest text the model reads: block_size for a GPT, max_len (with </s>) for translation."""
        return self.family.max_tokens(self.config)

    def layers(self) -> dict[str, int]:
        """Layers per kind of attention."""
        return self.family.layers(self.config)

    def info(self) -> dict:
        c = self.config
        return {
            "id": self.id,
            "name": self.subject.name,
            "family": self.family.name,
            "kinds": list(self.layers()),
            "layers": self.layers(),
            "n_head": c.n_head,
            "max_tokens": self.max_tokens,
            "vocab_size": c.vocab_size,
            "tokenizer": getattr(self.subject.tokenizer, "kind", "char"),
            "parameters": sum(p.numel() for p in self.subject.model.parameters()),
            "config": asdict(c),
        }

    # --- reading text

    def encode(self, text: str, what: str = "text") -> list[int]:
        if len(text) > MAX_TEXT_CHARS:
            raise UserError(f"the {what} is {len(text)} characters; at most {MAX_TEXT_CHARS} are read, shorten it")
        if not text.strip():
            raise UserError(f"the {what} is empty; type a sentence, e.g. The pizza came out of the oven")
        ids = self.subject.tokenizer.encode(text)
        room = self.family.text_room(self.config)  # a translation's </s> or <s> takes one
        if len(ids) > room:
            raise UserError(f"the {what} is {len(ids)} tokens but this model reads at most {room}; shorten it")
        return ids

    def encode_target(self, target: str | None) -> list[int] | None:
        """A translation's target text (None or blank: none); a GPT refuses any target."""
        self.family.check_target(target)
        return self.encode(target, "target text") if target is not None and target.strip() else None

    def tokens(self, ids: list[int]) -> list[dict]:
        return [
            {"id": int(i), "text": t, "label": token_label(t)}
            for i, t in zip(ids, token_texts(self.subject.tokenizer, ids), strict=True)
        ]

    def tokenize(self, text: str) -> dict:
        ids = self.encode(text)
        return {"model": self.id, "tokens": self.tokens(ids)}

    # --- attention

    def attention(
        self,
        text: str,
        target: str | None = None,
        kind: str | None = None,
        layer: int | None = None,
        head: int | None = None,
    ) -> dict:
        """Patterns of every layer and head (or one layer / one head) of each kind of attention on `text`.

        For translation, `text` is the source and `target` the decoder's text (default: the model's
        greedy translation). Each pattern row is a query's distribution over the keys; cells the
        mask forbids are 0 and `allowed` says which they are.
        """
        layers = self.layers()
        if kind is not None and kind not in layers:
            raise UserError(f"kind {kind!r} is not one of this {self.family.name} model's: {', '.join(layers)}")
        kinds = [kind] if kind else list(layers)
        for k in kinds:
            check_index("layer", layer, layers[k], f"layers of {k} attention")
        check_index("head", head, self.config.n_head, "heads per layer")
        self.encode(text, self.family.text_word)
        given = target if self.encode_target(target) is not None else None
        with self.lock, torch.inference_mode():
            maps, used_target = self.family.attention_maps(self.subject.model, self.subject.tokenizer, text, given)
        answer = {k: _maps_dict(maps[k], layer, head) for k in kinds}
        return {"model": self.id, "family": self.family.name, "target": used_target, "attention": answer}

    # --- the next token

    def next_token(
        self,
        text: str,
        target: str | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        show: int = 20,
    ) -> dict:
        """The distribution of the token after `text` (GPT) or after `target` given source `text` (translation).

        `raw` is softmax(logits) itself; `prob` the distribution sampling draws from once temperature,
        top-k and top-p are applied (temperature below TEMPERATURE_FLOOR: all mass on the argmax; a
        translation's <pad> and <s>: 0). The `show` most likely tokens are listed, most likely first.
        """
        check_sampling(temperature, top_k, top_p)
        text_ids = self.encode(text, self.family.text_word)
        target_ids = self.encode_target(target)
        with self.lock, torch.inference_mode():
            logits = self.family.next_logits(self.subject.model, text_ids, target_ids)  # (V,)
        raw, prob = distributions(logits, temperature, top_k, top_p, never=self.never_drawn())
        order = torch.argsort(logits, descending=True, stable=True)[:show].tolist()
        texts = token_texts(self.subject.tokenizer, order)
        rows = [
            {
                "id": i,
                "text": t,
                "label": token_label(t),
                "prob": float(prob[i]),
                "raw": float(raw[i]),
            }
            for i, t in zip(order, texts, strict=True)
        ]
        kept = int((prob > 0).sum())
        entropy = 0.0 - float((prob[prob > 0] * prob[prob > 0].log()).sum())  # 0.0 − x: one token gives 0.0, not -0.0
        return {
            "model": self.id,
            "settings": {"temperature": temperature, "top_k": top_k, "top_p": top_p},
            "kept": kept,
            "vocab_size": int(logits.numel()),
            "entropy": entropy,
            "tokens": rows,
        }

    def never_drawn(self) -> list[int]:
        """Ids sampling never draws: a translation's <pad> and <s>, which are never output (kqv.generate.beam)."""
        return self.family.never_drawn(self.config)

    # --- generation

    def generate(
        self,
        text: str,
        max_new_tokens: int = 100,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Iterator[dict]:
        """Yield {"token", "text", "ms"} per new token, then {"done": True, "text": all new text, …}.

        The input is checked before the first yield, so a bad request fails before anything streams.
        """
        check_sampling(temperature, top_k, top_p, seed)
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise UserError(f"max_new_tokens must be 1…{MAX_NEW_TOKENS}, got {max_new_tokens}")
        text_ids = self.encode(text, self.family.text_word)
        return self._stream(self._steps(text_ids, max_new_tokens, temperature, top_k, top_p, seed))

    def _steps(self, text_ids, max_new_tokens, temperature, top_k, top_p, seed) -> Iterator[int]:
        model, never = self.subject.model, self.never_drawn()
        with self.lock, torch.inference_mode():  # a decoder may re-store the weights once (kqv.generate.layout)
            decoder = self.family.decoder(model, text_ids, max_new_tokens)
        generator = _generator(model, seed)
        for _ in range(decoder.limit):
            with self.lock, torch.inference_mode():
                logits = decoder.next_logits()  # (V,)
                logits[never] = float("-inf")
                token = _draw(logits, temperature, top_k, top_p, generator)
            if decoder.ends(token):
                return
            decoder.append(token)
            yield token

    def _stream(self, steps: Iterator[int]) -> Iterator[dict]:
        """Per token: its id, its own piece (`label`), and `text`: the text it completes. A multi-byte
        character split over byte-level BPE tokens arrives whole with its last token, so the `text`s
        joined are exactly the decoded output."""
        tokenizer, new, shown = self.subject.tokenizer, [], ""
        started = time.perf_counter()
        last = started
        for token in steps:
            new.append(token)
            decoded = tokenizer.decode(new)
            text = "" if decoded.endswith("\ufffd") else decoded[len(shown) :]
            shown += text
            now = time.perf_counter()
            label = token_label(token_texts(tokenizer, [token])[0])
            yield {"token": token, "text": text, "label": label, "ms": round((now - last) * 1e3, 2)}
            last = now
        seconds = time.perf_counter() - started
        final = tokenizer.decode(new)
        yield {
            "done": True,
            "text": final,
            "rest": final[len(shown) :],  # what never completed (an unfinished character), if anything
            "tokens": len(new),
            "tokens_per_s": round(len(new) / seconds, 1) if seconds > 0 else None,
        }

    # --- shapes

    def explain(self, text: str) -> dict:
        """`kqv explain` on `text`: every tensor of one forward pass with its shape and meaning."""
        text_ids = self.encode(text, self.family.text_word)
        with self.lock, torch.inference_mode():
            explanation = self.family.explain(self.subject.model, text_ids, None)
        return {"model": self.id, **explanation.to_dict()}

    # --- why

    def why(
        self,
        text: str,
        methods: Sequence[str] | None = None,
        *,
        query_token: str | None = None,
        query_index: int | None = None,
        target: str | None = None,
        other: str | None = None,
        corrupt: str | None = None,
        corrupt_text: str | None = None,
        steps: int = 32,
        baseline: str = "zero",
        top: int = 5,
        translation: str | None = None,
    ) -> dict:
        """`kqv why` on `text`: the question about the prediction after the query, answered by each method.

        For translation, `text` is the source, `translation` the decoder's text (default: the model's greedy
        one) and the query a decoder position; a GPT refuses a translation.

        The family's report (kqv.inspect.why for a GPT) as JSON: its `.to_dict()` with every tensor of
        `results` left in the dtype it was computed in (float32: its shortest exact form), plus the
        logit lens's top tokens as text (`results.lens.top_tokens`, the labels of `top_ids`).
        """
        chosen = list(dict.fromkeys(WHY_METHODS if methods is None else methods))  # in order, once each
        unknown = [m for m in chosen if m not in WHY_METHODS]
        if unknown or not chosen:
            raise UserError(
                f"unknown method {unknown[0] if unknown else '(none)'!r}; choose from {', '.join(WHY_METHODS)}"
            )
        if query_token is not None and query_index is not None:
            raise UserError("give query_token or query_index, not both")
        if corrupt is not None and corrupt_text is not None:
            raise UserError("give corrupt (WORD=WORD) or corrupt_text, not both")
        if not 1 <= steps <= MAX_WHY_STEPS:
            raise UserError(f"steps must be 1…{MAX_WHY_STEPS}, got {steps}")
        if not 1 <= top <= MAX_WHY_TOP:
            raise UserError(f"top must be 1…{MAX_WHY_TOP}, got {top}")
        if baseline not in ("zero", "mean"):
            raise UserError(f"baseline must be zero or mean, got {baseline!r}")
        self.encode(text, self.family.text_word)
        if corrupt_text is not None:
            self.encode(corrupt_text, "corrupted text")
        options = {"query_token": query_token, "query_index": query_index, "target": target, "other": other,
                   "corrupt": corrupt, "corrupt_text": corrupt_text, "steps": steps, "baseline": baseline, "top": top,
                   "translation": translation}  # fmt: skip
        model, tokenizer = self.subject.model, self.subject.tokenizer
        try:
            with self.lock:  # no inference_mode: the gradient methods take gradients
                report = self.family.why(model, tokenizer, text, chosen, **options)
        except NotImplementedError:
            raise UserError(f"why is not available for {self.family.name} models yet; choose a GPT") from None
        except UserError as exc:
            raise UserError(_api_names(str(exc))) from None
        answer = _report_json(report)
        lens = answer.get("results", {}).get("lens")
        if isinstance(lens, dict) and "top_ids" in lens:
            lens["top_tokens"] = _labels(tokenizer, lens["top_ids"])
        for side in ("target", "other"):
            token = answer.get(side)
            if isinstance(token, dict) and isinstance(token.get("text"), str):
                token["label"] = token_label(token["text"])
        return {"model": self.id, "family": self.family.name, **answer}


# --- helpers shared by the requests


def check_index(what: str, value: int | None, n: int, of: str) -> None:
    if value is not None and not 0 <= value < n:
        raise UserError(f"{what} {value} is out of range: this model has {n} {of} (0–{n - 1})")


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, seed: int | None = None) -> None:
    """kqv.generate.sampling's checks as one-line UserErrors, plus the page's bounds (temperature ≤ 10, top_p > 0)."""
    if top_p is not None and not 0.0 < top_p <= 1.0:  # NaN too
        raise UserError(f"top_p must be in (0, 1] (1 = no limit), got {top_p}")
    try:
        check_sampling_values(temperature, top_k, top_p, seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if temperature > MAX_TEMPERATURE:
        raise UserError(
            f"temperature must be 0…{MAX_TEMPERATURE:g} (0 = always the most likely token), got {temperature}"
        )


def distributions(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    never: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(V,) logits -> (raw softmax, the distribution sampling draws from), both (V,) float64.

    `raw` is the model's own softmax; `prob` leaves out the ids in `never` and, below TEMPERATURE_FLOOR,
    puts all its mass on the argmax (logits / T would overflow to inf and softmax to NaN).
    """
    check_sampling(temperature, top_k, top_p)
    logits = logits.double()  # (V,)
    raw = torch.softmax(logits, -1)
    drawable = logits.clone()
    drawable[list(never)] = float("-inf")
    if is_greedy(temperature):
        prob = torch.zeros_like(raw)
        prob[int(drawable.argmax())] = 1.0
    else:
        prob = torch.softmax(filter_logits(drawable[None], temperature, top_k, top_p)[0], -1)  # (V,)
    return raw, prob


def _generator(model, seed: int | None) -> torch.Generator:
    generator = torch.Generator(device=next(model.parameters()).device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator


def _draw(logits: torch.Tensor, temperature, top_k, top_p, generator) -> int:
    return int(sample_next_token(logits.float()[None], temperature, top_k, top_p, generator)[0])


def _maps_dict(maps: AttentionMaps, layer: int | None, head: int | None) -> dict:
    L, nh = maps.patterns.shape[:2]
    layers = [layer] if layer is not None else list(range(L))
    heads = [head] if head is not None else list(range(nh))
    patterns = maps.patterns[np.ix_(layers, heads)].astype(np.float32)  # (len(layers), len(heads), Tq, Tk)
    return {
        "query_tokens": [{"text": t, "label": token_label(t)} for t in maps.query_texts],
        "key_tokens": [{"text": t, "label": token_label(t)} for t in maps.key_texts],
        "mask": maps.mask,
        "allowed": maps.allowed(),
        "default_query": maps.default_query,
        "layers": layers,
        "heads": heads,
        "patterns": patterns,  # float32, as the model computed them: JSON numbers in their shortest exact form
    }


# --- why as JSON

# kqv.inspect.why words its errors for the command line; the API's fields are these
_FLAGS = re.compile(r"--(query-index|query-token|corrupt-text|corrupt|target|other|steps|baseline|method)\b")


def _api_names(message: str) -> str:
    return _FLAGS.sub(lambda m: m.group(1).replace("-", "_"), message)


def _report_json(report) -> dict:
    """A report's `.to_dict()`, with its results as NumPy arrays in their own dtype (orjson writes them)."""
    answer = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    if hasattr(report, "results"):  # the tensors themselves, not to_dict's float64 lists
        answer["results"] = _json_ready(report.results)
    return _json_ready(answer)


def _json_ready(value):
    """Tensors as NumPy arrays (floats in the dtype computed: float32 stays float32), dataclasses as dicts."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
            value = value.float()  # bfloat16, float16: no NumPy dtype orjson writes
        return np.ascontiguousarray(value.numpy())  # orjson writes C-contiguous arrays only
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value) if value.dtype.kind in "fiub" else value.tolist()
    if is_dataclass(value) and not isinstance(value, type):
        return {name: _json_ready(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _labels(tokenizer, ids) -> list:
    """Nested token ids (any depth) -> the same nesting of their labels."""
    ids = np.asarray(ids)
    if not ids.size:
        return ids.tolist()
    unique = sorted(set(ids.reshape(-1).tolist()))
    labels = dict(zip(unique, (token_label(t) for t in token_texts(tokenizer, unique)), strict=True))
    return np.vectorize(labels.__getitem__, otypes=[object])(ids).tolist()
