"""The GPT family: a decoder-only transformer that reads one text and predicts its next token.

kinds of attention   "self": masked self-attention over the text (the model's mask, causal by default)
longest input        block_size tokens
decoding             kqv.generate.sampling.Decoder: a KV cache where the mask makes one exact
presets              kqv/presets/*.toml; random weights use the char tokenizer of tiny Shakespeare
"""

from pathlib import Path

import torch

from kqv.config import ConfigError, GPTConfig, from_dict, load_preset
from kqv.data.text import read_corpus
from kqv.errors import UserError
from kqv.families.base import FALLBACK_TEXT, PIZZA, ExplainInput, Family
from kqv.generate.sampling import Decoder
from kqv.inspect.attention import token_texts
from kqv.inspect.explain import explain_gpt
from kqv.inspect.patterns import AttentionMaps, encode_text, stack_patterns
from kqv.inspect.why import answer, ask
from kqv.models.gpt import GPT
from kqv.runs.load import Run, load_run_dir
from kqv.runs.memory import check_gpt_loading
from kqv.tokenizer import UnknownTokenError, train_tokenizer


class GPTSteps:
    """kqv.generate.sampling.Decoder as a family's StepDecoder: (V,) logits per step, never an end token."""

    def __init__(self, model, prompt: list[int], limit: int):
        self.decoder, self.limit = Decoder(model, prompt), limit

    def next_logits(self) -> torch.Tensor:
        return self.decoder.next_logits()[0]  # (V,)

    def append(self, token: int) -> None:
        self.decoder.append(token)

    def ends(self, token: int) -> bool:
        return False


class GPTFamily(Family):
    name, title, train_command = "gpt", "a GPT", "kqv gpt train"
    config_class, model_class, preset_folder = GPTConfig, GPT, ""
    text_word, lengths, self_keys, reads_target = "text", "T", "T", False

    def layers(self, config: GPTConfig) -> dict[str, int]:
        return {"self": config.n_layer}

    def max_tokens(self, config: GPTConfig) -> int:
        return config.block_size

    def text_room(self, config: GPTConfig) -> int:
        return config.block_size

    def check_memory(self, config: GPTConfig, where: str, device: str) -> None:
        check_gpt_loading(config, where, device)

    def load(self, run_dir: str | Path, device: str = "cpu", weights: str = "model.safetensors") -> Run:
        return load_run_dir(run_dir, self.name, GPTConfig, GPT, self.check_memory, self.train_command, device, weights)

    def random_model(self, preset: str, seed: int) -> tuple[GPT, object]:
        tokenizer = train_tokenizer("char", read_corpus(None).text)  # the 65 characters of tiny Shakespeare
        table = load_preset(preset, self.name)["model"]
        try:
            config = from_dict(GPTConfig, {**table, "vocab_size": tokenizer.vocab_size}, f"preset {preset}")
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        torch.manual_seed(seed)
        return GPT(config).eval(), tokenizer

    def check_target(self, target: str | None) -> None:
        if target is not None:
            raise UserError("target is for translation models; a GPT reads only text")

    @torch.no_grad()
    def attention_maps(self, model: GPT, tokenizer, text: str, target: str | None = None):
        """A GPT's masked self-attention on `text`, every layer and head -> ({"self": maps}, None)."""
        self.check_target(target)
        ids = encode_text(tokenizer, text, "text")
        limit = model.config.block_size
        if len(ids) > limit:
            raise UserError(
                f"the text is {len(ids)} tokens but the model reads at most {limit} (its block_size); shorten it"
            )
        device = next(model.parameters()).device
        out = model(torch.tensor([ids], device=device), need_patterns=True)
        texts = token_texts(tokenizer, ids)
        maps = AttentionMaps(
            "self", stack_patterns(out.patterns), texts, texts, model.config.mask, len(ids) - 1, "text"
        )
        return {"self": maps}, None

    def next_logits(self, model: GPT, text_ids: list[int], target_ids: list[int] | None) -> torch.Tensor:
        device = next(model.parameters()).device
        return model(torch.tensor([text_ids], device=device)).logits[0, -1].float()  # (V,)

    def decoder(self, model: GPT, text_ids: list[int], max_new_tokens: int) -> GPTSteps:
        return GPTSteps(model, text_ids, max_new_tokens)

    def explain(self, model: GPT, text_ids: list[int], target_ids: list[int] | None, vocab_note: str = ""):
        return explain_gpt(model, text_ids, vocab_note)

    def explain_input(self, model: GPT, tokenizer, text: str | None, target: str | None) -> ExplainInput:
        """The text, or without one the pizza sentence — or, for a char vocabulary that lacks some of its
        characters, FALLBACK_TEXT, or else the vocabulary's own characters — cropped to block_size."""
        if target is not None:
            raise UserError("--target is for translation models; a GPT reads only --text")
        note = ""
        if text is None:
            for candidate in (PIZZA, FALLBACK_TEXT):
                try:
                    text, ids = candidate, tokenizer.encode(candidate)
                    break
                except UnknownTokenError:
                    continue
            else:  # only a char tokenizer raises UnknownTokenError
                text = "".join(c for c in tokenizer.chars if c.isprintable())
                ids, note = tokenizer.encode(text), " (the vocabulary's own characters)"
        else:
            ids = tokenizer.encode(text)
        if not ids:
            raise UserError("--text is empty; give some text to look inside, e.g. --text 'ROMEO: But soft'")
        limit = model.config.block_size
        if len(ids) > limit:
            ids = ids[:limit]
            text, note = tokenizer.decode(ids), note + f" (cropped to block_size = {limit})"
        header = f"text: {text!r} -> T = {len(ids)} tokens{note}"
        return ExplainInput(ids, None, header, {"text": text, "tokens": len(ids)})

    def why(self, model: GPT, tokenizer, text: str, methods, **options):
        """options: query_token, query_index, target, other, corrupt, corrupt_text (the question, kqv.inspect.why.ask);
        steps, baseline, top (the methods, kqv.inspect.why.answer); translation (refused: a GPT has no decoder text)."""
        if options.pop("translation", None) is not None:
            raise UserError("--translation is for translation runs; a GPT reads only its text")
        asked = {
            k: options.pop(k, None)
            for k in ("query_token", "query_index", "target", "other", "corrupt", "corrupt_text")
        }
        return answer(model, ask(model, tokenizer, text, **asked), methods, **options)


GPT_FAMILY = GPTFamily()
