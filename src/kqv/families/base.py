"""What a model family tells the code that serves any model, and a model to look inside (`Subject`).

A family is one kind of model kqv trains — a decoder-only GPT, an encoder–decoder Transformer —
and its adapter is the one place that knows how that kind reads text, where its attention is,
how long an input may be and how it decodes. `kqv serve`, `kqv inspect`, `kqv explain` and the
bench ask the adapter instead of branching on the family's name.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import torch
from torch import nn

PIZZA = "The pizza came out of the oven and it tasted good"  # the learner's sentence: does "it" see pizza or oven?
PIZZA_ES = "La pizza salió del horno y sabía bien"  # its Spanish, the decoder's input for a translation model
FALLBACK_TEXT = "First Citizen: Before we proceed any further, hear me speak."  # for a char vocabulary without 'z'


@dataclass
class ExplainInput:
    """What `kqv explain` feeds the model: the ids, the texts they came from, and how to say so."""

    text_ids: list[int]
    target_ids: list[int] | None
    header: str  # printed above the tables
    inputs: dict  # for --json


class StepDecoder(Protocol):
    """One growing output, a token at a time: next_logits() -> (V,), then append(token)."""

    limit: int  # how many tokens it may make at most

    def next_logits(self) -> torch.Tensor: ...

    def append(self, token: int) -> None: ...

    def ends(self, token: int) -> bool:
        """Whether `token` ends the output (translation: </s>) instead of joining it."""
        ...


class Family:
    """The adapter's interface; kqv.families.gpt and kqv.families.translation implement it."""

    name: ClassVar[str]  # "gpt" | "translation": config.json's "kind"
    title: ClassVar[str]  # "a GPT", for sentences
    config_class: ClassVar[type]
    model_class: ClassVar[type]
    preset_folder: ClassVar[str]  # the presets' folder under kqv/presets ("" for the GPT's own)
    train_command: ClassVar[str]  # "kqv gpt train"
    text_word: ClassVar[str]  # what its input text is called in messages: "text" or "source text"
    lengths: ClassVar[str]  # the length letters of its shapes: "T" or "S, T"
    self_keys: ClassVar[str]  # what a query's keys are counted in: "T", "T (decoder self-attention)"
    reads_target: ClassVar[bool]  # whether a target text goes with the input (translation)

    def layers(self, config) -> dict[str, int]:
        """Layers per kind of attention, in the order they run."""
        raise NotImplementedError

    def max_tokens(self, config) -> int:
        """The longest input the model reads, in tokens (block_size, max_len)."""
        raise NotImplementedError

    def text_room(self, config) -> int:
        """How many tokens of a user's text fit, once the model's own tokens (</s>, <s>) are added."""
        raise NotImplementedError

    def check_memory(self, config, where: str, device: str) -> None:
        raise NotImplementedError

    def load(self, run_dir: str | Path, device: str = "cpu", weights: str = "model.safetensors"):
        """A run directory of this family -> kqv.runs.load.Run, every file checked."""
        raise NotImplementedError

    def random_model(self, preset: str, seed: int) -> tuple[nn.Module, object]:
        """A preset's model with random weights and a tokenizer that fits it -> (model, tokenizer)."""
        raise NotImplementedError

    def attention_maps(self, model, tokenizer, text: str, target: str | None = None) -> tuple[dict, str | None]:
        """Every kind of attention on `text` -> ({kind: kqv.inspect.patterns.AttentionMaps}, the target used)."""
        raise NotImplementedError

    def next_logits(self, model, text_ids: list[int], target_ids: list[int] | None) -> torch.Tensor:
        """(V,) float logits of the token after the text (GPT) or after <s> + target (translation)."""
        raise NotImplementedError

    def decoder(self, model, text_ids: list[int], max_new_tokens: int) -> StepDecoder:
        raise NotImplementedError

    def never_drawn(self, config) -> list[int]:
        """Token ids sampling never draws (a translation's <pad> and <s>)."""
        return []

    def explain(self, model, text_ids: list[int], target_ids: list[int] | None, vocab_note: str = ""):
        """kqv.inspect.explain's Explanation of one forward pass on these ids."""
        raise NotImplementedError

    def explain_input(self, model, tokenizer, text: str | None, target: str | None) -> ExplainInput:
        """`kqv explain`'s input: the text given (or a default that this tokenizer can read), and a target."""
        raise NotImplementedError

    def check_target(self, target: str | None) -> None:
        """A UserError where the family reads no target (a GPT reads only its text)."""

    def why(self, model, tokenizer, text: str, methods, **options):
        """`kqv why`: the question about one prediction on `text`, answered by each of `methods` -> a report
        with `.to_dict()` (kqv.inspect.why for a GPT, kqv.inspect.source_why for translation)."""
        raise NotImplementedError


@dataclass
class Subject:
    """A model to look inside, its family, and where it came from."""

    family: Family
    model: nn.Module
    tokenizer: object
    name: str  # the run directory, or "preset tiny (random weights, seed 0)"
    default_out: Path  # where kqv inspect writes its pictures
