"""`kqv why` as a user meets it: every method on a GPT run and a translation run, the pictures, the printed
summary, --json numbers equal to the library's, and bad input as one line with exit code 2.

Runs are trained with the `tiny` presets on small texts in-process through `kqv.cli.main`.
"""

import numpy as np
import pytest
import torch

from kqv.cli import main
from kqv.families import load
from kqv.inspect.contrast import Contrast
from kqv.inspect.dla import direct_logit_attribution
from kqv.inspect.patching import activation_patching
from tests.commands.running import cli, last_json
from tests.commands.test_inspect_cli import assert_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SENTENCES = [
    "The pizza came out of the oven and it tasted good.",
    "The tarts came out of the oven and it smelled sweet.",
]
TEXT = "The pizza came out of the oven and it "


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    """A tiny char GPT trained 60 steps on two sentences that differ in the dish and the verb after "it"."""
    folder = tmp_path_factory.mktemp("gpt")
    corpus = folder / "kitchen.txt"
    corpus.write_text("\n".join(SENTENCES * 40) + "\n", encoding="utf-8")
    out = folder / "run"
    assert (
        main(
            [
                "gpt",
                "train",
                "--preset",
                "tiny",
                "--data",
                str(corpus),
                "--max-iters",
                "60",
                "--set",
                "block_size=64",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_every_method_on_a_gpt_run_prints_one_line_each_and_draws_its_picture(gpt_run, tmp_path, capsys):
    code, out, err = cli(capsys, "why", gpt_run, TEXT, "--target", "t", "--other", "s", "--corrupt", "pizza=tarts",
                         "--out", tmp_path, "--json")  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    methods = [a["method"] for a in result["answers"]]
    assert methods == ["attention", "lens", "dla", "zero-ablation", "mean-ablation", "patching", "rollout",
                       "grad×input", "integrated gradients", "heads"]  # fmt: skip
    for method in methods:
        assert any(line.startswith(method) for line in out.splitlines()), method
    assert result["target"]["text"] == "t" and result["other"]["text"] == "s"
    assert result["position"] == len(TEXT) - 1 and result["corrupted"] == TEXT.replace("pizza", "tarts")
    names = sorted(p.split("/")[-1] for p in result["files"])
    assert names == ["dla.png", "heads.png", "lens.png", "patch.png", "tokens.png"]
    for path in result["files"]:
        assert_png(path)
    assert "summary: *it* → *t*" not in out  # the query here is the space after "it"
    assert out.count("summary: ") == 1 and "agreement:" in out
    assert set(result["evidence"]) == {"attention (mean of heads)", "rollout", "grad×input", "integrated gradients"}
    assert result["words"] == [
        "The",
        "pizza",
        "came",
        "out",
        "of",
        "the",
        "oven",
        "and",
        "it",
        "␣",
    ]  # a char model's words
    for row in result["evidence"].values():
        assert len(row) == len(result["words"]) and abs(sum(abs(v) for v in row) - 1) < 1e-6


def test_the_json_numbers_are_the_librarys(gpt_run, capsys, tmp_path):
    code, out, err = cli(capsys, "why", gpt_run, TEXT, "--method", "dla,patch", "--target", "t", "--other", "s",
                         "--corrupt", "pizza=tarts", "--out", tmp_path, "--json")  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    run = load(gpt_run)
    tok = run.tokenizer
    ids, corrupt = tok.encode(TEXT), tok.encode(TEXT.replace("pizza", "tarts"))
    contrast = Contrast(tok.encode("t")[0], tok.encode("s")[0], len(ids) - 1)
    dla = direct_logit_attribution(run.model, ids, contrast)
    np.testing.assert_allclose(result["results"]["dla"]["values"], dla.values.double().numpy(), atol=1e-6)
    with torch.no_grad():
        logits = run.model(torch.tensor([ids])).logits[0]
    assert abs(sum(result["results"]["dla"]["values"]) - float(contrast.of(logits))) < 1e-4  # the parts add up
    patching = activation_patching(run.model, ids, corrupt, contrast)
    np.testing.assert_allclose(result["results"]["patch"]["resid"], patching.resid.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(result["results"]["patch"]["heads"], patching.heads.double().numpy(), atol=1e-6)


def test_a_translation_run_attributes_each_output_token_to_the_source(tr_run, capsys, tmp_path):
    code, out, err = cli(capsys, "why", tr_run, "three four five", "--corrupt", "four=seven", "--out", tmp_path,
                         "--json")  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    assert result["family"] == "translation"
    methods = [a["method"] for a in result["answers"]]
    assert {"cross-attention", "rollout", "grad×input", "integrated gradients", "lens"} <= set(methods)
    assert any("dla and heads" in note for note in result["notes"])  # `all` leaves the GPT-only methods out
    names = sorted(p.split("/")[-1] for p in result["files"])
    assert "source.png" in names and "lens.png" in names
    for path in result["files"]:
        assert_png(path, min_width=150)
    S = len(result["source_tokens"])
    cross = np.array(result["results"]["source"]["cross"])
    assert cross.shape == (len(result["target_tokens"]), S)
    np.testing.assert_allclose(cross.sum(axis=1), 1.0, atol=1e-5)  # each row a distribution over the source


def test_a_preset_with_random_weights_runs_too(capsys, tmp_path):
    code, out, err = cli(capsys, "why", "--preset", "tiny", "hello there", "--method", "lens,heads", "--out", tmp_path)
    assert code == 0, err
    assert "lens" in out and "heads" in out and (tmp_path / "heads.png").is_file()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--corrupt", "pizza=tart"], "same token length"),
        (["--corrupt", "soup=cake"], "'soup' is not a word of the text"),
        (["--corrupt", "pizza"], "write WORD=WORD"),
        (["--target", "tasted"], "is 6 tokens"),
        (["--target", "t", "--other", "t"], "the same token"),
        (["--translation", "hola"], "--translation is for translation runs"),
        (["--query-token", "soup"], "is not a word of the text"),
        (["--query-index", "99"], "out of range"),
        (["--method", "lenz"], "unknown method"),
    ],
)
def test_bad_input_on_a_gpt_run_is_one_line_and_exit_2(gpt_run, capsys, tmp_path, args, says):
    code, out, err = cli(capsys, "why", gpt_run, TEXT, *args, "--out", tmp_path)
    assert code == 2, (out, err)
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--method", "dla"], "dla is for GPT runs"),
        (["--corrupt", "four=seventeen"], "same token length"),
    ],
)
def test_bad_input_on_a_translation_run_is_one_line_and_exit_2(tr_run, capsys, tmp_path, args, says):
    code, out, err = cli(capsys, "why", tr_run, "three four five", *args, "--out", tmp_path)
    assert code == 2, (out, err)
    assert says in err and len(err.strip().splitlines()) == 1


def test_no_text_or_no_run_is_one_line(capsys, gpt_run):
    code, _, err = cli(capsys, "why", gpt_run)
    assert code == 2 and "give a run directory and a text" in err
    code, _, err = cli(capsys, "why", "no/such/run", "text")
    assert code == 2 and "no such run directory" in err


def test_a_translation_query_token_names_the_output_word_explained(tr_run, capsys, tmp_path):
    code, out, err = cli(capsys, "why", tr_run, "three four five", "--translation", "tres cuatro cinco",
                         "--query-token", "cuatro", "--method", "grad,lens", "--out", tmp_path, "--json")  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    pieces = [t.replace("␣", " ") for t in result["target_tokens"]]  # <s>, then the translation's tokens
    ends = np.cumsum([len(p) for p in pieces[1:]])
    cuatro = 1 + int(np.searchsorted(ends, "".join(pieces[1:]).index("cuatro"), side="right"))
    assert result["position"] == cuatro - 1  # the row whose logits predict the word's first token
    assert result["target"]["id"] is not None and "the output word 'cuatro'" in result["how"]
