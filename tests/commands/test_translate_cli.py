"""`kqv translate train|eval|text` as a user meets them: run files, BLEU from sacrebleu, exact resume,
the `kqv translate RUN "…"` shorthand, and bad input as one line with exit code 2."""

import json
import random

import pytest
import sacrebleu

from kqv.cli import main
from kqv.train.loop import read_log

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUMBERS_EN = "zero one two three four five six seven eight nine".split()
NUMBERS_ES = "cero uno dos tres cuatro cinco seis siete ocho nueve".split()


def number_pairs(n=400, seed=0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        digits = [rng.randrange(10) for _ in range(rng.randint(1, 6))]
        pairs.append((" ".join(NUMBERS_EN[d] for d in digits), " ".join(NUMBERS_ES[d] for d in digits)))
    return pairs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "numbers.tsv"
    path.write_text("".join(f"{en}\t{es}\tcc-by\n" for en, es in number_pairs()), encoding="utf-8")
    return path


def train(*extra, capsys=None) -> dict:
    assert main(["translate", "train", "--preset", "tiny", "--json", *map(str, extra)]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tr"
    assert main(["translate", "train", "--preset", "tiny", "--data", str(corpus), "--out", str(out)]) == 0
    return out


def test_train_writes_the_run_and_its_held_out_pairs(run, corpus):
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "tokenizer.json", "model.safetensors", "trainer.safetensors", "log.csv", "loss.png",
            "valid.tsv", "test.tsv"} <= names  # fmt: skip
    info = json.loads((run / "config.json").read_text())
    assert info["kind"] == "translation" and info["model"]["n_layer_enc"] == 1
    test = [tuple(line.split("\t")) for line in (run / "test.tsv").read_text().splitlines()]
    train_sources = {s for s, _ in number_pairs()} - {s for s, _ in test}
    assert test and not {s for s, _ in test} & (train_sources - {s for s, _ in test})
    log = read_log(run / "log.csv")
    assert [row["step"] for row in log] == [0, 15, 30]
    assert log[-1]["val_loss"] < log[0]["val_loss"]


def test_eval_reports_sacrebleus_bleu_and_chrf_with_signatures(run, capsys, tmp_path):
    hyp_file = tmp_path / "hyps.txt"
    assert main(["translate", "eval", str(run), "--beam", "2", "--json", "--out", str(hyp_file)]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out
    refs = [line.split("\t")[1] for line in (run / "test.tsv").read_text().splitlines()]
    hyps = hyp_file.read_text(encoding="utf-8").splitlines()
    assert len(hyps) == len(refs) == result["pairs"]
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert result["perplexity"] == pytest.approx(2.718281828459045 ** result["nll"])
    assert len(result["examples"]) == 5 and {"source", "reference", "translation"} <= set(result["examples"][0])


def test_translate_shorthand_and_stdin(run, capsys, monkeypatch):
    import io

    assert main(["translate", str(run), "one two three", "four"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("one two three\n\nfour\n"))
    assert main(["translate", "text", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["translations"] == lines


def test_a_resumed_run_repeats_the_uninterrupted_one(run, corpus, tmp_path, capsys):
    stopped = tmp_path / "stopped"
    assert main(["translate", "train", "--preset", "tiny", "--data", str(corpus), "--out", str(stopped),
                 "--stop-at", "20"]) == 0  # fmt: skip
    assert main(["translate", "train", "--resume", str(stopped)]) == 0
    capsys.readouterr()
    whole, resumed = read_log(run / "log.csv"), read_log(stopped / "log.csv")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    for a, b in zip(whole, resumed, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)


def test_multi30k_layout_reads_line_aligned_files(tmp_path, capsys):
    from tests.conftest import MULTI30K, MULTI30K_WHY, require_dir

    folder = require_dir(MULTI30K, MULTI30K_WHY)
    from kqv.data.parallel import DataSpec

    pairs = DataSpec(src_file=str(folder / "val.de.gz"), tgt_file=str(folder / "val.en.gz")).read()
    assert len(pairs) == 1014
    assert pairs[0][1].startswith("A group of men")
    reversed_pairs = DataSpec(src_file=str(folder / "val.de.gz"), tgt_file=str(folder / "val.en.gz"), reverse=True)
    assert reversed_pairs.read()[0] == pairs[0][::-1]


def bad_cases(tmp_path, corpus):
    no_tab = tmp_path / "no-tab.tsv"
    no_tab.write_text("one\tuno\ntwo dos\n", encoding="utf-8")
    short = tmp_path / "a.txt"
    short.write_text("one\ntwo\n", encoding="utf-8")
    longer = tmp_path / "b.txt"
    longer.write_text("uno\ndos\ntres\n", encoding="utf-8")
    return {
        "line without a tab": (["translate", "train", "--data", no_tab], f"{no_tab}:2"),
        "unknown column": (["translate", "train", "--data", corpus, "--tgt-col", "5"], f"{corpus}:1"),
        "mismatched line counts": (["translate", "train", "--src-file", short, "--tgt-file", longer], "2"),
        "missing file": (["translate", "train", "--data", tmp_path / "nope.tsv"], "nope.tsv"),
        "only --src-file": (["translate", "train", "--src-file", short], "--tgt-file"),
        "no such run": (["translate", "eval", tmp_path / "nowhere"], "no such run directory"),
        "bad config": (["translate", "train", "--data", corpus, "--set", "d_model=30"], "not divisible by n_head"),
        "unknown preset": (["translate", "train", "--preset", "huge"], "unknown preset 'huge'"),
    }


@pytest.mark.parametrize(
    "case",
    ["line without a tab", "unknown column", "mismatched line counts", "missing file", "only --src-file",
     "no such run", "bad config", "unknown preset"],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(case, corpus, tmp_path, capsys):
    argv, expected = bad_cases(tmp_path, corpus)[case]
    assert main([str(a) for a in argv] + ["--out", str(tmp_path / "out")] * (argv[1] == "train")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kqv: error: ") and "\n" not in err and expected in err
    assert not (tmp_path / "out").exists()  # a run that cannot start leaves nothing behind


def test_a_gpt_run_is_not_a_translation_run(tmp_path, capsys):
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"kind": "gpt", "model": {}, "train": {}}))
    assert main(["translate", "eval", str(tmp_path / "gpt")]) == 2
    assert "is a GPT run (a decoder-only model); use `kqv gpt …`" in capsys.readouterr().err


def test_set_overrides_reach_the_model_and_the_tokenizer(corpus, tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["translate", "train", "--preset", "tiny", "--data", str(corpus), "--out", str(out), "--steps", "2",
            "--set", "vocab_size=280", "--set", "d_model=16", "--set", "train.eval_interval=2"]  # fmt: skip
    assert main(argv) == 0
    info = json.loads((out / "config.json").read_text())
    assert info["model"]["n_embd"] == 16 and info["model"]["vocab_size"] <= 280
    assert info["train"]["max_iters"] == 2
