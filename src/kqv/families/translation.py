"""The translation family: the encoder–decoder Transformer, which reads a source sentence and writes its target.

kinds of attention   "encoder": source over source (padding hidden); "decoder": <s> + target over
                     itself (causal); "cross": <s> + target over the source
longest input        max_len tokens, </s> (source) or <s> (target) included
decoding             one cached decoder step per token; </s> ends; <pad> and <s> are never drawn
presets              kqv/presets/translation/*.toml; random weights use a BPE vocabulary of the preset's
                     size trained on the embedded English–Spanish verses (about 2 s)
"""

from pathlib import Path

import torch

from kqv.config import ConfigError, TransformerConfig, from_dict, load_preset
from kqv.data.parallel import default_corpus_path, read_tsv
from kqv.errors import UserError
from kqv.families.base import PIZZA, PIZZA_ES, ExplainInput, Family
from kqv.generate.beam import greedy_decode
from kqv.inspect.attention import token_texts
from kqv.inspect.explain import explain_translation
from kqv.inspect.patterns import AttentionMaps, encode_text, stack_patterns
from kqv.inspect.source_why import answer_translation, ask_translation
from kqv.models.transformer import SPECIAL_TOKENS, Transformer
from kqv.runs.load import Run, load_run_dir
from kqv.runs.memory import check_transformer_loading
from kqv.tokenizer.bpe import BPETokenizer


class TranslationSteps:
    """Greedy-or-sampled decoding of one source, a step at a time (the cache of kqv.models.transformer)."""

    def __init__(self, model: Transformer, src_ids: list[int], max_new_tokens: int):
        c = model.config
        self.model, self.eos = model, c.eos_id
        self.device = next(model.parameters()).device
        self.limit = min(max_new_tokens, c.max_len - 2)  # as kqv translate: the target and its </s> fit in max_len − 1
        self.state = model.start_decoding(torch.tensor([src_ids], device=self.device), self.limit + 1)
        self.last = c.bos_id

    def next_logits(self) -> torch.Tensor:
        return self.model.step(torch.tensor([self.last], device=self.device), self.state)[0].float()  # (V,)

    def append(self, token: int) -> None:
        self.last = token

    def ends(self, token: int) -> bool:
        return token == self.eos


class TranslationFamily(Family):
    name, title, train_command = "translation", "an encoder-decoder Transformer", "kqv translate train"
    config_class, model_class, preset_folder = TransformerConfig, Transformer, "translation"
    text_word, lengths, self_keys, reads_target = "source text", "S, T", "T (decoder self-attention)", True

    def layers(self, config: TransformerConfig) -> dict[str, int]:
        return {"encoder": config.n_layer_enc, "decoder": config.n_layer_dec, "cross": config.n_layer_dec}

    def max_tokens(self, config: TransformerConfig) -> int:
        return config.max_len

    def text_room(self, config: TransformerConfig) -> int:
        return config.max_len - 1  # </s> after the source, <s> before the target

    def check_memory(self, config: TransformerConfig, where: str, device: str) -> None:
        check_transformer_loading(config, where, device)

    def load(self, run_dir: str | Path, device: str = "cpu", weights: str = "model.safetensors") -> Run:
        run = load_run_dir(
            run_dir, self.name, TransformerConfig, Transformer, self.check_memory, self.train_command, device, weights
        )
        check_special_ids(run.tokenizer, run.model_config, f"{run_dir}/tokenizer.json")
        return run

    def random_model(self, preset: str, seed: int) -> tuple[Transformer, BPETokenizer]:
        table = load_preset(preset, self.name)["model"]
        pairs = read_tsv(default_corpus_path(), 2, 3, header=True)
        texts = [s for s, _ in pairs] + [t for _, t in pairs]
        tokenizer = BPETokenizer.train(texts, int(table.get("vocab_size", 8000)), SPECIAL_TOKENS)
        try:
            config = from_dict(
                TransformerConfig, {**table, "vocab_size": tokenizer.vocab_size}, f"preset translation/{preset}"
            )
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        torch.manual_seed(seed)
        return Transformer(config).eval(), tokenizer

    @torch.no_grad()
    def attention_maps(self, model: Transformer, tokenizer, text: str, target: str | None = None):
        """Encoder, decoder and cross-attention on one sentence pair -> ({kind: maps}, the target text used).

        The source is read as the model reads it (ids + </s>), the decoder input as in training
        (<s> + target ids). Without `target`, the target is the model's own greedy translation.
        """
        c = model.config
        src_ids = encode_text(tokenizer, text, "source text") + [c.eos_id]
        if len(src_ids) > c.max_len:
            raise UserError(
                f"the source is {len(src_ids)} tokens with </s> but the model reads at most {c.max_len} "
                "(its max_len); shorten it"
            )
        device = next(model.parameters()).device
        src = torch.tensor([src_ids], device=device)  # (1, S)
        if target is None:
            tgt_ids = greedy_decode(model, src)[0].tokens
            target = tokenizer.decode(tgt_ids)
        else:
            tgt_ids = encode_text(tokenizer, target, "--target text")
        tgt_in = [c.bos_id, *tgt_ids]
        if len(tgt_in) > c.max_len:
            raise UserError(
                f"the target is {len(tgt_in)} tokens with <s> but the model reads at most {c.max_len} (max_len); "
                "shorten it"
            )
        out = model(src, torch.tensor([tgt_in], device=device), need_pattern=True)
        src_texts, tgt_texts = token_texts(tokenizer, src_ids), token_texts(tokenizer, tgt_in)
        last_src = max(len(src_ids) - 2, 0)  # the last source token before </s>
        specials = frozenset(token_texts(tokenizer, [c.pad_id, c.bos_id, c.eos_id]))
        last_tgt = len(tgt_in) - 1
        p = out.patterns
        maps = {
            "encoder": AttentionMaps("encoder", stack_patterns(p["encoder"]), src_texts, src_texts, "none", last_src,
                                     "source", specials),
            "decoder": AttentionMaps("decoder", stack_patterns(p["decoder"]), tgt_texts, tgt_texts, "causal", last_tgt,
                                     "target", specials),
            "cross": AttentionMaps("cross", stack_patterns(p["cross"]), tgt_texts, src_texts, "none", last_tgt,
                                   "target", specials),
        }  # fmt: skip
        return maps, target

    def next_logits(self, model: Transformer, text_ids: list[int], target_ids: list[int] | None) -> torch.Tensor:
        c = model.config
        src, tgt = [*text_ids, c.eos_id], [c.bos_id, *(target_ids or [])]
        if len(tgt) > c.max_len:
            raise UserError(f"the target is {len(tgt)} tokens with <s>; this model reads at most {c.max_len}")
        device = next(model.parameters()).device
        return model(torch.tensor([src], device=device), torch.tensor([tgt], device=device)).logits[0, -1].float()

    def decoder(self, model: Transformer, text_ids: list[int], max_new_tokens: int) -> TranslationSteps:
        return TranslationSteps(model, [*text_ids, model.config.eos_id], max_new_tokens)

    def never_drawn(self, config: TransformerConfig) -> list[int]:
        return [config.pad_id, config.bos_id]  # never output, as in greedy and beam search (kqv.generate.beam)

    def explain(self, model: Transformer, text_ids: list[int], target_ids: list[int] | None, vocab_note: str = ""):
        c = model.config
        src = [*text_ids[: c.max_len - 1], c.eos_id]  # as the model reads a source: ids + </s>
        tgt_in = [c.bos_id, *(target_ids or [])][: c.max_len]  # teacher forcing: <s> + target
        return explain_translation(model, src, tgt_in, vocab_note)

    def explain_input(self, model: Transformer, tokenizer, text: str | None, target: str | None) -> ExplainInput:
        """The source (default: the pizza sentence) and the decoder's target: the one given, the Spanish of the
        default sentence, or else the model's own greedy translation."""
        c = model.config
        given_text, given_target = text is not None, target is not None
        text = PIZZA if text is None else text
        if not text.strip():
            raise UserError(
                "--text is empty; give a sentence to translate, e.g. --text 'The pizza came out of the oven'"
            )
        text_ids = tokenizer.encode(text)[: c.max_len - 1]
        target = target if target is not None else None if given_text else PIZZA_ES
        if target is None:
            device = next(model.parameters()).device
            with torch.no_grad():
                src = torch.tensor([[*text_ids, c.eos_id]], device=device)
                target_ids = greedy_decode(model, src)[0].tokens
            target, how = tokenizer.decode(target_ids), "the model's own greedy translation"
        else:
            target_ids = tokenizer.encode(target)
            how = "given" if given_target else "the Spanish of the default text"
        S, T = len(text_ids) + 1, min(len(target_ids) + 1, c.max_len)
        header = f"source: {text!r} -> S = {S} tokens with </s>\ntarget: {target!r} ({how}) -> T = {T} tokens with <s>"
        return ExplainInput(text_ids, target_ids, header, {"text": text, "target": target, "source_tokens": S,
                                                             "target_tokens": T})  # fmt: skip

    def why(self, model: Transformer, tokenizer, text: str, methods, **options):
        """options: translation, query_token, query_index, target, other, corrupt, corrupt_text (the question,
        kqv.inspect.source_why.ask_translation); steps, top (the methods)."""
        keys = ("translation", "query_token", "query_index", "target", "other", "corrupt", "corrupt_text")
        asked = {k: options.pop(k, None) for k in keys}
        return answer_translation(model, ask_translation(model, tokenizer, text, **asked), methods, **options)


def check_special_ids(tokenizer, config: TransformerConfig, where: str) -> None:
    """<pad>, <s>, </s> must have the ids the model was built with."""
    try:
        ids = [tokenizer.token_id(t) for t in SPECIAL_TOKENS]
    except ValueError:
        raise UserError(f"{where}: not a translation tokenizer (it lacks {', '.join(SPECIAL_TOKENS)})") from None
    if ids != [config.pad_id, config.bos_id, config.eos_id]:
        raise UserError(f"{where}: special tokens {SPECIAL_TOKENS} have ids {ids}, not 0, 1, 2")


TRANSLATION_FAMILY = TranslationFamily()
