"""Torture part: generation past the context under every mask, and sampling values that must not break it.

(a) In-process, random tiny GPTs (1–3 layers, random widths, scores and block sizes, sharp random weights)
for every mask of kqv.nn.masks × every positional encoding, greedy generation well past block_size with
window "slide" and "hop", with and without a KV cache. A run survives when cached and recomputed decoding
give the same tokens and every step's logits equal a fresh forward pass over the window that step should
read (slide: the last block_size tokens; hop: the start moved half a block at a time), within 1e-5 + 1e-5·|x|
in float32 (1e-10 in float64, full mode). A token may differ only at a tie within that tolerance. Also:
seeded sampling gives the same text cached, recomputed and through the page's Decoder, and GPT.forward
refuses a cache exactly where the mask makes it inexact.

(b) `kqv gpt sample RUN` in subprocesses with extreme values. Invalid ones (temperature nan, inf, -1; seed
2^64, -1; top-p nan, 1.5, -0.1; top-k 0) survive with exactly one stderr line starting `kqv: error:`, exit
code 2, nothing on stdout; valid ones (temperature 1e-300, 5e-324: greedy; seed 2^64 − 1) with exit 0, the
requested number of tokens, an empty stderr, and, for the tiny temperatures, the greedy text (the library's
temperature 0, in this process). No "Traceback" anywhere. The run is made in `work` by
`kqv gpt train --preset tiny --max-iters 2`.
"""

import json
import os
import pathlib
import random
import subprocess
import sys

import torch

from kqv.config import GPTConfig
from kqv.generate.sampling import Decoder, generate, next_token
from kqv.models.gpt import GPT
from kqv.nn.masks import parse_mask
from kqv.nn.positional import POSITIONAL
from kqv.nn.scores import SCORES

MASK_FORMS = ["causal", "none", "anticausal", "window:1", "window:3", "window:{block}", "window:{block_plus}"]
WINDOWS = ("slide", "hop")
ENV = {**os.environ, "KQV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
N_SAMPLE = 40  # new tokens per CLI run: past tiny's block_size of 32
AT_ONCE = 4  # CLI processes running together on the shared machine


# --- (a) in-process: every mask × positional encoding × window -------------------------------------------------


def mask_name(form: str, block: int) -> str:
    return form.format(block=block, block_plus=block + 4)


def random_gpt(rng: random.Random, pos: str, mask_form: str, dtype=torch.float32) -> GPT:
    """A random tiny GPT with weights far from GPT-2's small init: sharp attention, so a wrong key shows."""
    n_head = rng.choice([1, 2])
    block = rng.randint(4, 10)
    config = GPTConfig(
        vocab_size=rng.randint(5, 30),
        block_size=block,
        n_layer=rng.randint(1, 3),
        n_head=n_head,
        n_embd=n_head * rng.choice([2, 4, 8]),
        score=rng.choice(list(SCORES)),
        mask=mask_name(mask_form, block),
        pos_encoding=pos,
    )
    torch.manual_seed(rng.randrange(2**31))
    model = GPT(config).eval().to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


def reference_start(n: int, block: int, window: str) -> int:
    """Where the window the model should read begins when the text has n tokens, written out."""
    if window == "slide":
        return max(0, n - block)
    start = 0
    while n - start > block:
        start += max(1, block // 2)
    return start


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return bool(((a - b).abs() <= tol + tol * b.abs()).all())


def is_tie(logits: torch.Tensor, a: int, b: int, tol: float) -> bool:
    return abs(float(logits[a] - logits[b])) <= tol * (1 + float(logits.abs().max()))


def greedy_problems(model: GPT, prompt: list[int], window: str, tol: float) -> list[str]:
    """Cached and recomputed greedy generation against a fresh forward pass per step; [] when all agree."""
    block, n_new = model.config.block_size, 2 * model.config.block_size + 3
    runs = {}
    for use_cache in (True, False):
        kw = dict(temperature=0, use_cache=use_cache, window=window, return_logits=True)
        runs[use_cache] = list(generate(model, prompt, n_new, **kw))
    text = prompt + [token for token, _ in runs[True]]
    with torch.no_grad():
        for i in range(n_new):
            n = len(prompt) + i
            expected = model(torch.tensor([text[reference_start(n, block, window) : n]])).logits[0, -1]  # (V,)
            best = int(expected.argmax())
            for use_cache, out in runs.items():
                token, logits = out[i]
                what = "cached" if use_cache else "recomputed"
                if not close(logits, expected, tol):
                    return [f"step {i} ({n} tokens), {what}: max |Δlogit| {(logits - expected).abs().max():.3g}"]
                if token != best and not is_tie(expected, token, best, tol):
                    return [f"step {i}, {what}: token {token}, the window's argmax is {best}"]
            if runs[True][i][0] != runs[False][i][0]:
                return []  # a tie broken two ways: the texts part here, both correct so far
    return []


def every_positional_and_window(mask_form: str, quick: bool, dtype=torch.float32, tol=1e-5):
    rng = random.Random(f"{mask_form}-{dtype}")
    tried, survived, notes = 0, 0, []
    for pos in POSITIONAL:
        for window in WINDOWS:
            for _ in range(1 if quick else 3):
                model = random_gpt(rng, pos, mask_form, dtype)
                c = model.config
                prompt = [rng.randrange(c.vocab_size) for _ in range(rng.randint(1, c.block_size + 3))]
                tried += 1
                try:
                    found = greedy_problems(model, prompt, window, tol)
                except Exception as e:  # a crash is an outcome to report
                    found = [f"raised {type(e).__name__}: {e}"]
                if found:
                    notes.append(f"{pos}, {window}, {c.n_layer} layers, {c.score}, block {c.block_size}: {found[0]}")
                else:
                    survived += 1
    return tried, survived, notes


def seeded_sampling_agrees(quick: bool) -> tuple[int, int, list[str]]:
    """Temperature 0.8, top-p 0.95, one seed: generate cached = generate recomputed = a Decoder loop (the page)."""
    rng = random.Random(21)
    tried, survived, notes = 0, 0, []
    for mask_form in MASK_FORMS:
        for _ in range(2 if quick else 6):
            model = random_gpt(rng, rng.choice(list(POSITIONAL)), mask_form)
            prompt, n_new, seed = [rng.randrange(model.config.vocab_size)], 2 * model.config.block_size + 3, 5
            tried += 1
            try:
                cached = list(generate(model, prompt, n_new, 0.8, None, 0.95, seed))
                recomputed = list(generate(model, prompt, n_new, 0.8, None, 0.95, seed, use_cache=False))
                decoder, generator, page = Decoder(model, prompt), torch.Generator().manual_seed(seed), []
                with torch.inference_mode():
                    for _ in range(n_new):
                        page.append(int(next_token(decoder.next_logits(), 0.8, None, 0.95, generator)[0]))
                        decoder.append(page[-1])
            except Exception as e:
                cached, recomputed, page = f"raised {type(e).__name__}: {e}", None, None
            if cached == recomputed == page:
                survived += 1
            else:
                notes.append(f"{model.config.mask}: cached {cached}, recomputed {recomputed}, Decoder {page}")
    return tried, survived, notes


def cache_refused(quick: bool) -> tuple[int, int, list[str]]:
    rng = random.Random(22)
    tried, survived, notes = 0, 0, []
    for mask_form in MASK_FORMS:
        model = random_gpt(rng, "rope", mask_form)
        name = model.config.mask
        tried += 1
        try:
            with torch.no_grad():
                model(torch.tensor([[0, 1]]), cache=model.new_cache(1))
            refused = None
        except ValueError as e:
            refused = str(e)
        exact = parse_mask(name).cache_exact
        if exact == (refused is None) and (exact or repr(name) in refused):
            survived += 1
        else:
            notes.append(f"{name}: cache_exact {exact}, forward with a cache: {refused or 'accepted'}")
    return tried, survived, notes


# --- (b) the CLI with extreme values ------------------------------------------------------------------------------

INVALID = {
    "temperature nan": ["--temperature", "nan"],
    "temperature inf": ["--temperature", "inf"],
    "temperature -1": ["--temperature", "-1"],
    "seed 2^64": ["--seed", str(2**64)],
    "seed -1": ["--seed", "-1"],
    "top-p nan": ["--top-p", "nan"],
    "top-p 1.5": ["--top-p", "1.5"],
    "top-p -0.1": ["--top-p", "-0.1"],
    "top-k 0": ["--top-k", "0"],
}
VALID = {
    "temperature 1e-300": ["--temperature", "1e-300"],
    "temperature 5e-324": ["--temperature", "5e-324"],
    "seed 2^64 - 1": ["--seed", str(2**64 - 1)],
}


def kqv_commands(commands: dict[str, list[str]], work: pathlib.Path) -> dict[str, subprocess.CompletedProcess]:
    """Run `python -m kqv ARGS` for each entry, AT_ONCE at a time -> the finished processes by name."""
    done, names = {}, list(commands)
    for i in range(0, len(names), AT_ONCE):
        batch = names[i : i + AT_ONCE]
        procs = {
            name: subprocess.Popen(
                [sys.executable, "-m", "kqv", *commands[name]],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=ENV,
                cwd=work,
            )
            for name in batch
        }
        for name, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                err += "\n(timed out after 300 s)"
            done[name] = subprocess.CompletedProcess(commands[name], proc.returncode, out, err)
    return done


def train_tiny_run(work: pathlib.Path) -> tuple[pathlib.Path, str | None]:
    """-> (the run directory, None) or (…, what failed)."""
    run_dir = work / "sample-run"
    args = ["gpt", "train", "--preset", "tiny", "--max-iters", "2", "--set", "eval_iters=1", "--out", str(run_dir)]
    proc = kqv_commands({"train": [*args, "--device", "cpu"]}, work)["train"]
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return run_dir, f"`kqv {' '.join(args)}` exited {proc.returncode}: {tail}"
    return run_dir, None


def sample_args(run_dir: pathlib.Path, extra: list[str]) -> list[str]:
    return ["gpt", "sample", str(run_dir), "--prompt", "ROMEO:", "--tokens", str(N_SAMPLE), *extra, "--json"]


def invalid_problem(proc: subprocess.CompletedProcess) -> str | None:
    lines = proc.stderr.splitlines()
    if "Traceback" in proc.stdout + proc.stderr:
        return "a traceback"
    if proc.returncode != 2:
        return f"exit code {proc.returncode}"
    if len(lines) != 1 or not lines[0].startswith("kqv: error: "):
        return f"stderr is not one `kqv: error:` line: {proc.stderr!r}"
    if proc.stdout:
        return f"something was written to stdout: {proc.stdout[:80]!r}"
    return None


def sampled_text(proc: subprocess.CompletedProcess) -> str | None:
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]).get("text")
    except (IndexError, json.JSONDecodeError, AttributeError):
        return None


def valid_problem(proc: subprocess.CompletedProcess) -> str | None:
    if "Traceback" in proc.stdout + proc.stderr or proc.returncode != 0 or proc.stderr:
        return f"exit code {proc.returncode}, stderr {proc.stderr.strip()[-200:]!r}"
    text = sampled_text(proc)
    if not isinstance(text, str) or json.loads(proc.stdout.strip().splitlines()[-1]).get("tokens") != N_SAMPLE:
        return f"no JSON line with {N_SAMPLE} tokens and a text on stdout: {proc.stdout[-120:]!r}"
    return None


def cli_rows(work: pathlib.Path) -> list[tuple[str, int, int, list[str]]]:
    names = ("sample CLI: invalid values -> one `kqv: error:` line, exit 2", "sample CLI: valid extreme values")
    run_dir, failed = train_tiny_run(work)
    if failed:
        return [(names[0], len(INVALID), 0, [failed]), (names[1], len(VALID), 0, [failed])]
    procs = kqv_commands({name: sample_args(run_dir, extra) for name, extra in {**INVALID, **VALID}.items()}, work)
    rows = []
    for title, cases, check in ((names[0], INVALID, invalid_problem), (names[1], VALID, valid_problem)):
        notes = [f"{name}: {problem}" for name in cases if (problem := check(procs[name]))]
        rows.append((title, len(cases), len(cases) - len(notes), notes))
    try:
        greedy = greedy_text(run_dir)
    except Exception as e:
        greedy = f"(the library could not load the run: {type(e).__name__}: {e})"
    tried, notes = 0, []
    for name in ("temperature 1e-300", "temperature 5e-324"):
        tried += 1
        if sampled_text(procs[name]) != greedy:
            notes.append(f"{name}: {sampled_text(procs[name])!r}, greedy: {greedy!r}")
    rows.append(("sample CLI: temperatures below 1e-4 write the greedy text", tried, tried - len(notes), notes))
    return rows


def greedy_text(run_dir: pathlib.Path) -> str:
    """What `kqv gpt sample RUN --prompt ROMEO: --temperature 0` writes, through the library in this process."""
    from kqv.families.gpt import GPT_FAMILY  # here: (a) must run even if the training side is mid-change

    run = GPT_FAMILY.load(run_dir)
    return run.tokenizer.decode(list(generate(run.model, run.tokenizer.encode("ROMEO:"), N_SAMPLE, temperature=0)))


def scenarios(quick: bool, work: pathlib.Path) -> list[tuple[str, int, int, list[str]]]:
    """Run this part's scenarios; -> rows (scenario name, tried, survived, notes on each failure)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and the machine is shared
    try:
        rows = []
        for form in MASK_FORMS:
            shown = form.format(block="N≥block", block_plus="N>block")
            title = f"sampling: mask {shown} × every positional encoding × slide, hop: cached = recomputed = reference"
            rows.append((title, *every_positional_and_window(form, quick)))
        if not quick:
            for form in ("causal", "anticausal", "window:3", "none"):
                title = f"sampling: float64, mask {form}, cached = recomputed = reference to 1e-10"
                rows.append((title, *every_positional_and_window(form, quick, torch.float64, 1e-10)))
        rows.append(
            ("sampling: seeded sampling, cached = recomputed = the page's Decoder", *seeded_sampling_agrees(quick))
        )
        rows.append(("sampling: GPT.forward refuses a KV cache exactly where inexact", *cache_refused(quick)))
        return rows + cli_rows(work)
    finally:
        torch.set_num_threads(threads)
