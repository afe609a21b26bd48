"""`kqv inspect` as a user meets it: PNG heatmaps and tables for a GPT run, a translation run and a preset with
random weights; what is hidden in the plotted matrices; --json; bad input as one line with exit code 2.

Runs are trained with the `tiny` presets on small texts (a few seconds each) in-process through `kqv.cli.main`.
"""

import math

import numpy as np
import pytest

from kqv.cli import main
from kqv.families import load_subject
from kqv.families.gpt import GPT_FAMILY
from kqv.families.translation import TRANSLATION_FAMILY
from kqv.inspect.attention import masked_pattern
from tests.commands.running import cli, last_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PNG = b"\x89PNG\r\n\x1a\n"
SENTENCE = "The pizza came out of the oven and it tasted good"


def assert_png(path, min_width=200) -> None:
    from PIL import Image

    data = open(path, "rb").read()
    assert data[:8] == PNG and len(data) > 5_000
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_width and image.height >= min_width


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    """A tiny char GPT (2 layers × 2 heads, context 32) trained 10 steps on the sentence repeated."""
    folder = tmp_path_factory.mktemp("gpt")
    corpus = folder / "pizza.txt"
    corpus.write_text((SENTENCE + ".\n") * 60, encoding="utf-8")
    out = folder / "run"
    assert (
        main(["gpt", "train", "--preset", "tiny", "--data", str(corpus), "--max-iters", "10", "--out", str(out)]) == 0
    )
    return out


def test_gpt_run_writes_the_grid_and_head_maps_and_prints_both_tables(gpt_run, tmp_path, capsys):
    text = "the pizza came out and it tasted"
    code, out, err = cli(capsys, "inspect", gpt_run, text, "--query-token", "it", "--layer", "1", "--out", tmp_path,
                         "--json")  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    assert result["command"] == "inspect" and result["model"] == "gpt" and result["run"] == str(gpt_run)
    assert result["tokens"] == [c if c != " " else "␣" for c in text]  # a char model: one token per character
    self_attn = result["attention"]["self"]
    assert self_attn["mask"] == "causal"
    names = sorted(p.split("/")[-1] for p in result["files"])
    assert names == ["self-grid.png", "self-layer1-head0.png", "self-layer1-head1.png"]
    for path in result["files"]:
        assert_png(path)
    query = self_attn["query"]
    assert query["index"] == text.index(" it") + 2 and query["token"] == "t" and query["word"] == "it"
    assert len(self_attn["top"]) == 4 and len(self_attn["summaries"]) == 4  # 2 layers × 2 heads
    for row in self_attn["top"]:
        weights = [k["weight"] for k in row["keys"]]
        assert len(weights) == 3 and weights == sorted(weights, reverse=True) and 0 < sum(weights) <= 1 + 1e-6
        assert all(k["index"] <= query["index"] for k in row["keys"])  # a causal query sees only the past
    for s in self_attn["summaries"]:
        assert 0 <= s["entropy"] <= math.log(len(text)) and 0 <= s["prev_token"] <= 1 and 0 <= s["first_token"] <= 1
    assert f"query: token {query['index']} 't' in 'it'" in out
    assert "layer  head  entropy  prev  first  self" in out and "layer  head  1st" in out
    assert result["seconds"] < 10


def test_gpt_patterns_rows_sum_to_one_and_the_future_is_hidden(gpt_run):
    subject = load_subject(str(gpt_run))
    maps = GPT_FAMILY.attention_maps(subject.model, subject.tokenizer, "the oven and it")[0]["self"]
    L, nh, T, Tk = maps.patterns.shape
    assert (L, nh, T, Tk) == (2, 2, 15, 15)
    assert maps.patterns.sum(axis=-1) == pytest.approx(np.ones((L, nh, T)), abs=1e-5)
    future = np.triu(np.ones((T, T), bool), k=1)
    for layer in range(L):
        for head in range(nh):
            shown = masked_pattern(maps.patterns[layer, head], maps.allowed())
            assert (shown.mask == future).all()  # exactly the causal triangle, never the diagonal
            assert (maps.patterns[layer, head][future] == 0).all()


def test_default_query_is_the_last_token_and_no_head_maps_without_layer_or_head(gpt_run, tmp_path, capsys):
    code, out, err = cli(capsys, "inspect", gpt_run, "the oven", "--out", tmp_path, "--json", "--top", "2")
    assert code == 0, err
    result = last_json(out)
    assert result["attention"]["self"]["query"]["index"] == 7
    assert [p.split("/")[-1] for p in result["files"]] == ["self-grid.png"]
    assert all(len(row["keys"]) == 2 for row in result["attention"]["self"]["top"])
    code, out, err = cli(capsys, "inspect", gpt_run, "the oven", "--head", "0", "--query-index", "-3", "--out",
                         tmp_path, "--json")  # fmt: skip
    result = last_json(out)
    assert code == 0 and result["attention"]["self"]["query"]["index"] == 5
    assert sorted(p.split("/")[-1] for p in result["files"]) == ["self-grid.png", "self-layer0-head0.png",
                                                                 "self-layer1-head0.png"]  # fmt: skip


def test_default_out_dir_is_inside_the_run(gpt_run, capsys):
    code, out, err = cli(capsys, "inspect", gpt_run, "it tasted", "--json")
    assert code == 0, err
    assert last_json(out)["files"] == [str(gpt_run / "inspect" / "self-grid.png")]
    assert (gpt_run / "inspect" / "self-grid.png").read_bytes()[:8] == PNG


def test_translation_run_shows_all_three_attentions(tr_run, tmp_path, capsys):
    code, out, err = cli(capsys, "inspect", tr_run, "one two three", "--target", "uno dos tres", "--out", tmp_path,
                         "--layer", "0", "--head", "1", "--query-token", "two", "--json")  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    assert result["model"] == "translation" and result["target"] == "uno dos tres"
    source, target = result["tokens"]["source"], result["tokens"]["target"]
    assert source[-1] == "</s>" and target[0] == "<s>"
    kinds = result["attention"]
    assert list(kinds) == ["encoder", "decoder", "cross"]
    assert [kinds[k]["mask"] for k in kinds] == ["none", "causal", "none"]
    assert kinds["encoder"]["key_tokens"] == source and kinds["cross"]["key_tokens"] == source
    assert kinds["cross"]["query_tokens"] == target and kinds["decoder"]["key_tokens"] == target
    assert kinds["encoder"]["query"]["word"] == "two"  # an English word: found in the source (its last BPE piece)
    assert kinds["decoder"]["query"] is None and kinds["cross"]["query"] is None
    assert "no query here: 'two' is not in the target" in out
    assert all(s["prev_token"] is None and s["self_token"] is None for s in kinds["cross"]["summaries"])
    names = sorted(p.split("/")[-1] for p in result["files"])
    assert names == sorted(f"{k}-{f}.png" for k in kinds for f in ("grid", "layer0-head1"))
    for path in result["files"]:
        assert_png(path)


def test_translation_patterns_hide_only_the_decoders_future(tr_run):
    subject = load_subject(str(tr_run))
    maps, target = TRANSLATION_FAMILY.attention_maps(subject.model, subject.tokenizer, "four five six seven")
    assert isinstance(target, str)  # the model's own greedy translation
    S = maps["encoder"].patterns.shape[-1]
    T = maps["decoder"].patterns.shape[-1]
    assert maps["cross"].patterns.shape[-2:] == (T, S)
    for kind, m in maps.items():
        assert m.patterns.sum(axis=-1) == pytest.approx(np.ones(m.patterns.shape[:-1]), abs=1e-5), kind
        hidden = masked_pattern(m.patterns[0, 0], m.allowed()).mask
        if kind == "decoder":
            assert (hidden == np.triu(np.ones((T, T), bool), k=1)).all()
        else:
            assert not hidden.any(), kind  # encoder self-attention and cross-attention hide nothing


def test_attention_option_keeps_one_kind_and_the_default_target_is_greedy(tr_run, tmp_path, capsys):
    code, out, err = cli(capsys, "inspect", tr_run, "eight nine", "--attention", "cross", "--out", tmp_path, "--json")
    assert code == 0, err
    result = last_json(out)
    assert list(result["attention"]) == ["cross"] and [p.split("/")[-1] for p in result["files"]] == ["cross-grid.png"]
    assert "target (the model's greedy translation):" in out
    assert result["attention"]["cross"]["query"]["index"] == len(result["tokens"]["target"]) - 1


def test_preset_with_random_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "inspect", "--preset", "tiny", "hello there", "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["preset"] == "tiny" and result["run"] is None
    assert result["files"] == ["runs/inspect-tiny/self-grid.png"] and (tmp_path / result["files"][0]).is_file()
    assert "random weights" in out
    # random weights (std 0.02) attend almost uniformly: query i spreads ~1/(i+1) over itself and the past
    uniform = np.mean([math.log(i + 1) for i in range(len("hello there"))])
    assert all(s["entropy"] == pytest.approx(uniform, rel=0.05) for s in result["attention"]["self"]["summaries"])


def test_translation_preset_with_random_weights(tmp_path, capsys):
    code, out, err = cli(capsys, "inspect", "--preset", "translate/tiny", "good morning", "--target", "buenos días",
                         "--out", tmp_path, "--json")  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    assert result["model"] == "translation" and len(result["files"]) == 3
    shown = "".join(result["tokens"]["target"][1:]).replace("␣", " ")
    assert shown in ("buenos días", "buenos d\\xc3\\xadas")  # a piece holding half of "í" shows its byte


def bad_cases(gpt_run, tr_run):
    return {
        "no such run": (["runs/nope", "hello"], "runs/nope: no such run directory"),
        "empty text": ([gpt_run, "   "], "the text is empty"),
        "unknown query token": ([gpt_run, "the oven", "--query-token", "pizza"], "'pizza' is not a word of the text"),
        "query index": ([gpt_run, "the oven", "--query-index", "8"], "--query-index 8 is out of range"),
        "layer": ([gpt_run, "the oven", "--layer", "2"], "--layer 2 is out of range: the self attention has 2 layers"),
        "head": ([gpt_run, "the oven", "--head", "-1"], "--head -1 is out of range"),
        "too long": ([gpt_run, "the oven " * 5], "the text is 45 tokens but the model reads at most 32"),
        "unknown char": ([gpt_run, "the ovén"], "not in the char tokenizer's vocabulary"),
        "attention on a gpt": ([gpt_run, "the oven", "--attention", "cross"], "are for translation runs"),
        "no text": ([gpt_run], "give a run directory and a text"),
        "run and preset": ([gpt_run, "the oven", "--preset", "tiny"], "with --preset give only the text"),
        "unknown preset": (["--preset", "huge", "hi"], "--preset huge: no such preset; choose one of default"),
        "a word not in the text": ([gpt_run, "the oven", "--words", "oven,pizza"], "--words: 'pizza' is not a whole"),
        "ablate a translation": ([tr_run, "one two", "--ablate", "0.0"], "--ablate is for GPT runs"),
        "ablate a layer": ([gpt_run, "the oven", "--ablate", "2.0"], "--ablate 2.0: layer 2 is out of range"),
        "ablate a head": ([gpt_run, "the oven", "--ablate", "0.5"], "--ablate 0.5: head 5 is out of range"),
        "ablate not L.H": ([gpt_run, "the oven", "--ablate", "0"], "give a layer and a head as L.H"),
        "query on no side": (
            [tr_run, "one two", "--target", "uno dos", "--query-token", "tres"],
            "'tres' is not a word of the source",
        ),  # fmt: skip
    }


@pytest.mark.parametrize(
    "case",
    ["no such run", "empty text", "unknown query token", "query index", "layer", "head", "too long", "unknown char",
     "attention on a gpt", "no text", "run and preset", "unknown preset", "a word not in the text",
     "ablate a translation", "ablate a layer", "ablate a head", "ablate not L.H", "query on no side"],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(case, gpt_run, tr_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, message = bad_cases(gpt_run, tr_run)[case]
    code, out, err = cli(capsys, "inspect", *args, "--out", tmp_path / "out")
    assert code == 2
    assert err.startswith("kqv: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not (tmp_path / "out").exists()  # nothing is written before the input is known to be good


def test_bad_input_in_a_real_process(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "nope"
    proc = subprocess.run([sys.executable, "-m", "kqv", "inspect", missing, "hello"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"kqv: error: {missing}: no such run directory; train one with `kqv gpt train --out {missing}`, "
        "or look at a model with random weights: kqv inspect --preset tiny TEXT\n"
    )


def test_who_looks_where_sums_each_words_weights_from_the_patterns(gpt_run, tmp_path, capsys):
    text = "the pizza came out and it tasted"
    code, out, err = cli(capsys, "inspect", gpt_run, text, "--query-token", "it", "--words", "CAME", "--out", tmp_path,
                         "--json")  # fmt: skip
    assert code == 0, err
    shown = last_json(out)["attention"]["self"]["words"]
    subject = load_subject(str(gpt_run))
    patterns = GPT_FAMILY.attention_maps(subject.model, subject.tokenizer, text)[0]["self"].patterns
    query = text.index(" it") + 2
    spans = {w: range(text.index(w), text.index(w) + len(w)) for w in ("the", "pizza", "came", "out", "and")}
    direct = {w: patterns[:, :, query, list(cols)].sum(axis=-1) for w, cols in spans.items()}  # (L, nh) each
    best = sorted(direct, key=lambda w: -direct[w].max())[:3]
    assert [w["word"] for w in shown] == best + (["came"] if "came" not in best else [])
    assert [w["asked"] for w in shown] == [w["word"] == "came" for w in shown]
    for word in shown:
        assert word["tokens"] == list(spans[word["word"]])  # a char model: every letter of the word, summed
        assert len(word["heads"]) == 4  # every head of 2 layers × 2, largest first
        weights = [h["weight"] for h in word["heads"]]
        assert weights == sorted(weights, reverse=True)
        for h in word["heads"]:
            assert h["weight"] == pytest.approx(direct[word["word"]][h["layer"], h["head"]], abs=1e-9)
    first = shown[0]
    heads = ", ".join(f"{h['layer']}.{h['head']} ({h['weight']:.2f})" for h in first["heads"][:3])
    assert f"  heads that look from 'it' at '{first['word']}': {heads}\n" in out
    assert "who looks where" in out and out.index("layer  head  1st") < out.index("who looks where")


def test_no_who_looks_where_without_a_query_option(gpt_run, tmp_path, capsys):
    code, out, err = cli(capsys, "inspect", gpt_run, "the oven", "--out", tmp_path, "--json")
    assert code == 0, err
    assert "who looks where" not in out and "words" not in last_json(out)["attention"]["self"]


def test_ablate_matches_a_hand_written_hook_and_ablating_nothing_changes_nothing(gpt_run, tmp_path, capsys):
    import torch

    from kqv.inspect.attention import next_token_probs

    text = "the pizza came out and it tasted"
    code, out, err = cli(capsys, "inspect", gpt_run, text, "--query-token", "it", "--ablate", "1.0", "--ablate",
                         "0.1", "--out", tmp_path, "--json")  # fmt: skip
    assert code == 0, err
    ablate = last_json(out)["ablate"]
    query = text.index(" it") + 2
    assert ablate["query"] == query
    assert [r["heads"] for r in ablate["runs"]] == [[[1, 0]], [[0, 1]], [[1, 0], [0, 1]]]  # each, then both

    subject = load_subject(str(gpt_run))
    model, ids = subject.model.eval(), subject.tokenizer.encode(text)

    def by_hand(removed):
        handles = []
        for layer, head in removed:

            def zero(module, inputs, output, head=head):
                output = output.clone()
                output[:, head] = 0.0
                return output

            handles.append(model.blocks[layer].attn.z.register_forward_hook(zero))
        try:
            with torch.no_grad():
                return torch.softmax(model(torch.tensor([ids])).logits[0, query].double(), -1)
        finally:
            for handle in handles:
                handle.remove()

    plain = by_hand([])
    for run in ablate["runs"]:
        expected = by_hand([tuple(h) for h in run["heads"]])
        assert len(run["tokens"]) >= 3
        for tok in run["tokens"]:
            assert tok["before"] == pytest.approx(float(plain[tok["id"]]), abs=1e-6)
            assert tok["after"] == pytest.approx(float(expected[tok["id"]]), abs=1e-6)
        top_before = [int(i) for i in torch.argsort(plain, descending=True, stable=True)[:3]]
        assert [t["id"] for t in run["tokens"]][:3] == top_before
    assert torch.equal(next_token_probs(model, ids, query, []), plain)  # ablating nothing changes nothing
    assert not torch.allclose(by_hand([(1, 0)]), plain, atol=0, rtol=0)  # the hook does remove something
    line = next(x for x in out.splitlines() if x.startswith("ablating 1.0, 0.1: "))
    first = ablate["runs"][2]["tokens"][0]
    assert line.startswith(f"ablating 1.0, 0.1: P('{first['token']}') {first['before']:.3f} → {first['after']:.3f}, ")
