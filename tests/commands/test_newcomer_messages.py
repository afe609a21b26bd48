"""The messages a newcomer meets first: misspelt options, runs of the wrong kind, digits runs never overwritten,
a run folder for a model file, and a sampling hint that fits the corpus."""

import json

import pytest

from kqv.cli import main


def err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def exit_code(argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's errors leave through Parser.exit
        return exc.code


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["gpt", "sample", "runs/gpt", "--promt", "x"],
            "kqv gpt sample: error: unrecognized arguments: --promt x; did you mean --prompt? "
            "(see `kqv gpt sample --help`)",
        ),
        (["gpt", "sample", "runs/gpt", "--promt=x"], "did you mean --prompt? (see `kqv gpt sample --help`)"),
        (["digits", "train", "--hiden", "3"], "did you mean --hidden? (see `kqv digits train --help`)"),
        (["gpt", "sample", "runs/gpt", "--zzzzzz"], "unrecognized arguments: --zzzzzz (see `kqv gpt sample --help`)"),
        (
            ["gpt", "sample", "runs/gpt", "extra", "words"],
            "unrecognized arguments: extra words (see `kqv gpt sample --help`)",
        ),
        (["gpt", "smaple", "runs/gpt"], "invalid choice: 'smaple'"),
        (["gpt", "smaple", "runs/gpt"], "; did you mean sample? (see `kqv gpt --help`)"),
        (["digts", "train"], "; did you mean digits? (see `kqv --help`)"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["gpt", "sample"], "kqv gpt sample: error: one of the arguments run --from-hf is required"),
        (["digits", "train", "--epochs"], "kqv digits train: error: argument --epochs: expected one argument"),
    ],
)
def test_a_usage_error_names_the_subcommand_and_the_nearest_option(argv, expected, capsys):
    assert exit_code(argv) == 2
    assert expected in err_line(capsys)


def test_no_suggestion_for_a_word_nothing_resembles(capsys):
    assert exit_code(["frobnicate"]) == 2
    assert "did you mean" not in err_line(capsys)


def fake_run(folder, kind):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"kind": kind, "model": {}, "train": {}}))
    return folder


def test_a_translation_run_given_to_kqv_gpt_says_so(tmp_path, capsys):
    run = fake_run(tmp_path / "translate", "translation")
    for argv in (["gpt", "sample", run, "--prompt", "x"], ["gpt", "eval", run]):
        assert exit_code(argv) == 2
        assert err_line(capsys) == (
            f"kqv: error: {run} is a translation run (an encoder–decoder); use `kqv translate …`"
        )


def test_a_gpt_run_given_to_kqv_translate_says_so(tmp_path, capsys):
    run = fake_run(tmp_path / "gpt", "gpt")
    for argv in (["translate", run, "hello"], ["translate", "eval", run]):
        assert exit_code(argv) == 2
        assert err_line(capsys) == f"kqv: error: {run} is a GPT run (a decoder-only model); use `kqv gpt …`"


DIGITS = ["digits", "train", "--epochs", "1", "--hidden", "8"]


def test_digits_train_never_overwrites_a_model_without_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert exit_code(DIGITS) == 0
    assert "model saved to runs/digits/model.safetensors" in capsys.readouterr().out
    first = (tmp_path / "runs/digits/model.safetensors").read_bytes()
    assert exit_code(DIGITS) == 0  # the default name is taken: the next one
    assert "model saved to runs/digits-2/model.safetensors" in capsys.readouterr().out
    assert (tmp_path / "runs/digits/model.safetensors").read_bytes() == first
    for out in ("runs/digits/model.safetensors", "runs/digits"):  # the file, or its folder
        assert exit_code([*DIGITS, "--out", out]) == 2
        assert err_line(capsys) == (
            "kqv: error: runs/digits/model.safetensors already holds a trained model; "
            "pass --force to replace it, or choose another --out"
        )
    assert (tmp_path / "runs/digits/model.safetensors").read_bytes() == first
    assert exit_code([*DIGITS, "--seed", "1", "--out", "runs/digits", "--force"]) == 0
    assert (tmp_path / "runs/digits/model.safetensors").read_bytes() != first
    assert not list((tmp_path / "runs").glob("digits-3"))


def test_digits_predict_and_plot_take_the_run_folder(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    assert exit_code([*DIGITS, "--out", "runs/mine/model.safetensors"]) == 0
    image = Image.new("L", (8, 8), 255)
    for xy in [(2, 1), (3, 1), (4, 1), (5, 2), (4, 3), (3, 4), (5, 5), (4, 6), (3, 6), (2, 6)]:
        image.putpixel(xy, 0)  # a rough 3
    image.save(tmp_path / "three.png")
    capsys.readouterr()
    assert exit_code(["digits", "predict", "runs/mine", "three.png"]) == 0
    assert capsys.readouterr().out.startswith("three.png: ")
    assert exit_code(["digits", "plot", "runs/mine"]) == 0
    assert (tmp_path / "runs/mine/history.png").is_file()
    assert exit_code(["digits", "predict", "runs/none", "three.png"]) == 2
    assert "no such model file" in err_line(capsys)


def test_the_sampling_hint_takes_its_prompt_from_the_corpus(tmp_path, capsys):
    corpus = tmp_path / "contes.txt"
    corpus.write_text("Il était une fois l'ogre qui dormait.\n" + "Le chat dort, le chien aboie. " * 400)
    out = tmp_path / "run"
    argv = ["gpt", "train", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--data", corpus, "--out", out]
    assert exit_code(argv) == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sample from it:")]
    assert len(hint) == 1
    assert hint[0] == f"sample from it: kqv gpt sample {out} --prompt 'Il était une fois'"


def test_sample_prompt_is_short_known_and_cut_at_a_word():
    from kqv.data.text import EMBEDDED_SOURCE, Corpus
    from kqv.tokenizer import train_tokenizer
    from kqv.train.gpt_run import sample_prompt

    def prompt(text, source="x.txt"):
        return sample_prompt(Corpus(text, source), train_tokenizer("char", text))

    assert prompt("First Citizen:\nBefore we proceed", EMBEDDED_SOURCE) == "ROMEO:"
    assert prompt("\n\n  «Bonjour», dit-il à l'ami très loin\n") == "«Bonjour», dit-il à"
    assert prompt("Supercalifragilisticexpialidocious!") == "Supercalifragilistic"
    assert all(len(prompt(t)) <= 20 for t in ("a b c d e f g h i j k l m n o p", "x" * 50))


def test_digits_predict_warns_of_a_picture_unlike_the_training_digits(tmp_path, monkeypatch, capsys):
    from PIL import Image, ImageDraw

    monkeypatch.chdir(tmp_path)
    assert exit_code([*DIGITS, "--out", "runs/mine/model.safetensors"]) == 0
    thin = Image.new("L", (400, 400), 255)
    ImageDraw.Draw(thin).line([(200, 40), (200, 360)], fill=0, width=4)  # a "1" drawn with a fine pen
    thin.save("thin.png")
    zero = Image.new("L", (400, 400), 255)
    ImageDraw.Draw(zero).ellipse([100, 40, 300, 360], outline=0, width=40)
    zero.save("zero.png")
    capsys.readouterr()
    assert exit_code(["digits", "predict", "runs/mine", "thin.png", "zero.png", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "kqv: warning: thin.png: the ink is 8.0 times as tall as wide, narrower than 99% of the training digits "
        "(width ÷ height at least 0.25, typically 0.62); the prediction may mean little"
    ]
    results = json.loads(out.strip().splitlines()[-1])["results"]
    assert [len(r["warnings"]) for r in results] == [1, 0]
