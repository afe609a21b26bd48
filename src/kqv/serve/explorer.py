"""What `kqv serve` can do with one model, as plain Python: tokenize, attention, next token, generate, explain.

The web layer (kqv.serve.app) only parses requests and turns these dicts into JSON; everything a
page shows is computed here, from the same library functions `kqv inspect`, `kqv explain` and
`kqv gpt sample` use.

One `Explorer` per served model. Requests arrive on many threads at once; a lock around each
forward pass keeps them from meeting inside the model (the activation cache behind `explain`
puts hooks on it for the length of one pass). Generation takes the lock once per token, so a
long generation does not hold up other requests.

Sampling follows kqv.generate.sampling: a temperature below TEMPERATURE_FLOOR is greedy (all mass
on the argmax), and every value is checked before anything is computed, so a bad generation
request fails before its stream starts. A translation never draws <pad> or <s> (as beam search).
"""

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

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
