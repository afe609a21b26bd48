"""README.md and docs/*.md stay true to the code: a short front page, links that resolve, commands that parse,
Python snippets that run as printed (each in a fresh process, in a folder holding a small kitchen run).

Every `kqv …` command shown in a code block is parsed by kqv's real argument parser (after the same
`kqv translate RUN "…"` shorthand that kqv.cli.main applies), without running it. A command whose
output in the docs is an argparse usage error must fail to parse instead.
"""

import contextlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kqv.cli import build_parser
from kqv.commands.translate import shorthand
from kqv.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_IN_THE_REPOSITORY = {".venv", "runs", "build", "dist", ".git"}  # ignored or outside what is committed

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
SHELL_LANGUAGES = {"bash", "sh", "shell", "zsh"}
# argparse's own errors, as kqv.cli.Parser prints them: `kqv digits train: error: argument …`, `kqv: error: argument …`
ARGPARSE_ERROR = re.compile(
    r"^kqv(?: [\w-]+)+: error: |^kqv: error: (?:argument |unrecognized arguments|the following arguments)"
)
OPERATORS = {"&&", "||", ";", "|", "&", "<", ">", ">>", "<<", ">&", "|&"}
FORBIDDEN = [
    (re.compile(r"session", re.IGNORECASE), "session"),
    (re.compile(r"\bissues?\b", re.IGNORECASE), "issue"),
    (re.compile(re.escape("../shared")), "../shared"),
    (re.compile(re.escape("/work/")), "/work/"),
]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --- Markdown: code blocks, headings, links ---------------------------------------------------------------


@dataclass
class Block:
    language: str
    first_line: int  # 1-based line number of the block's first content line
    lines: list[str]


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[Block]]:
    """-> (prose lines with their numbers, fenced code blocks)."""
    prose, blocks, block, fence = [], [], None, ""
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if block is None and opened:
            fence, block = opened.group(1), Block(opened.group(2).lower(), number + 1, [])
        elif block is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip(fence[0]).strip():
            blocks.append(block)
            block = None
        elif block is not None:
            block.lines.append(line)
        else:
            prose.append((number, line))
    return prose, blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercase, punctuation other than - and _ dropped,
    each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose:
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")  # GitHub numbers repeated headings
    return found


def relative_links(path: Path) -> list[tuple[int, str]]:
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    links = []
    for number, line in prose:
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: …
                links.append((number, target))
    return links


def link_problem(page: Path, target: str) -> str | None:
    """Why a relative link from `page` does not resolve, or None when it does."""
    file_part, _, anchor = target.partition("#")
    dest = (page.parent / file_part).resolve() if file_part else page
    try:
        inside = dest.relative_to(ROOT)
    except ValueError:
        return f"{file_part} is outside the repository"
    if not dest.exists() or (inside.parts and inside.parts[0] in NOT_IN_THE_REPOSITORY):
        return f"{file_part} does not exist in the repository"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{rel(dest)} has no heading with the anchor #{anchor}"
    return None


# --- Commands in code blocks ------------------------------------------------------------------------------


@dataclass
class Command:
    page: str
    line: int
    text: str  # as shown, after the prompt
    argv: list[str]  # kqv's arguments
    must_fail: bool  # the docs show an argparse usage error as its output

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def shell_words(command: str) -> list[list[str]]:
    """One shell line -> the words of each simple command in it (&&, ;, | separate them; redirections and
    comments dropped)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, words, redirect = [], [], False
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&", "|&"):
            commands.append(words)
            words, redirect = [], False
        elif token in OPERATORS:
            redirect = True  # the next word is a file name, not an argument
        elif redirect:
            redirect = False
        else:
            words.append(token)
    commands.append(words)
    return [w for w in commands if w]


def kqv_arguments(words: list[str]) -> list[str] | None:
    """The arguments of a kqv command (`kqv …`, `.venv/bin/kqv …`, `time kqv …`), or None for another program
    (torchrun … -m kqv, curl, bash, a variable assignment)."""
    if words and words[0] == "time":
        words = words[1:]
    if words and words[0] in ("kqv", ".venv/bin/kqv"):
        return words[1:]
    return None


def block_commands(page: str, block: Block) -> list[Command]:
    """The kqv commands of one code block. In a block with `$ ` prompts only the prompted lines are commands
    and the lines after one are its output; in a shell block (```bash) every line is a command."""
    joined: list[tuple[int, str]] = []  # shell continuation lines (ending in \) joined to their first line
    for offset, line in enumerate(block.lines):
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
        else:
            joined.append((block.first_line + offset, line.rstrip()))
    prompted = any(line.startswith("$ ") for _, line in joined)
    if not prompted and block.language not in SHELL_LANGUAGES:
        return []  # output only
    found = []
    for i, (number, line) in enumerate(joined):
        if prompted and not line.startswith("$ "):
            continue
        shown = line[2:] if prompted else line
        output = joined[i + 1][1] if prompted and i + 1 < len(joined) else ""
        for words in shell_words(shown):
            argv = kqv_arguments(words)
            if argv is not None:
                found.append(Command(page, number, shown.strip(), argv, bool(ARGPARSE_ERROR.match(output))))
    return found


def all_commands() -> list[Command]:
    found = []
    for path in PAGES:
        _, blocks = split_markdown(path.read_text(encoding="utf-8"))
        for block in blocks:
            found.extend(block_commands(rel(path), block))
    return found


COMMANDS = all_commands()


def parse(parser, argv: list[str]) -> str | None:
    """None when kqv's parser accepts argv, else its error message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(shorthand(list(argv)))
    except SystemExit as exc:
        if exc.code not in (0, None):  # --help and --version exit 0
            return err.getvalue().strip() or f"exit code {exc.code}"
    except UserError as exc:
        return f"kqv: error: {exc}"
    return None


@pytest.fixture(scope="module")
def parser():
    return build_parser()


# --- The tests --------------------------------------------------------------------------------------------


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move details into docs/ (at most 300)"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    broken = [f"{rel(page)}:{n}: ({t}) {p}" for n, t in relative_links(page) if (p := link_problem(page, t))]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_no_words_about_anything_outside_the_project(page):
    found = [
        f"{rel(page)}:{number}: {word!r} in {line.strip()[:100]!r}"
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        for pattern, word in FORBIDDEN
        if pattern.search(line)
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.where)
def test_commands_parse(parser, command):
    problem = parse(parser, command.argv)
    if command.must_fail:
        assert problem is not None, f"{command.where}: `{command.text}` is shown failing to parse, but it parses"
    else:
        assert problem is None, f"{command.where}: `{command.text}` does not parse: {problem}"


def test_commands_are_found_in_every_kind_of_block():
    shown = {(c.page, tuple(c.argv)) for c in COMMANDS}
    assert ("README.md", ("gpt", "train")) in shown  # bash scripts/setup.sh && .venv/bin/kqv gpt train  # …
    assert ("docs/results.md", ("lab", "run", "--grid", "seed-questions", "--steps", "300", "--seeds", "2")) in shown
    assert any(
        c.page == "docs/04-translation.md" and c.argv[-3:-1] == ["20000", "--out"] for c in COMMANDS
    )  # a \ continuation
    assert any(c.must_fail for c in COMMANDS if c.page == "README.md")  # `kqv digits train --hidden 0`
    assert not any(c.text.startswith(("torchrun", "curl")) for c in COMMANDS)
    assert len(COMMANDS) > 60


# --- The helpers, on made-up pages (so that a checker that finds nothing cannot pass unnoticed) ---------


def test_slug_follows_githubs_rules():
    assert slug("Step 1 — Digits") == "step-1--digits"
    assert slug("`kqv serve RUN …`: the page") == "kqv-serve-run--the-page"
    assert slug("nanoGPT's CPU recipe: `--preset nanogpt-cpu`") == "nanogpts-cpu-recipe---preset-nanogpt-cpu"
    assert slug("Multi30k, German → English") == "multi30k-german--english"
    assert slug("bible-en-es.tsv.gz") == "bible-en-estsvgz"
    assert slug("The `run_with_cache` [link](x.md)") == "the-run_with_cache-link"


def test_block_commands_on_a_made_up_block():
    text = "\n".join(
        [
            "```text",
            "$ kqv gpt train --set n_head=3   # a comment",
            "kqv: error: n_embd=128 is not divisible by n_head=3",
            "$ kqv digits train --hidden 0",
            "kqv digits train: error: argument --hidden: must be at least 1, got 0",
            "$ kqv bogus",
            "kqv: error: argument COMMAND: invalid choice: 'bogus'",
            "kqv explain: one forward pass (output, not a command)",
            "```",
            "```bash",
            "M=data; kqv translate runs/t 'hello' < in.txt | head -1",
            "kqv translate train --src-file a \\",
            "    --tgt-file b",
            "torchrun --standalone -m kqv gpt train",
            "```",
            "```text",
            "kqv serve load check: output of a block without prompts",
            "```",
        ]
    )
    _, blocks = split_markdown(text)
    found = [c for b in blocks for c in block_commands("page.md", b)]
    assert [(c.line, c.argv, c.must_fail) for c in found] == [
        (2, ["gpt", "train", "--set", "n_head=3"], False),  # a kqv: error: line that is not argparse's
        (4, ["digits", "train", "--hidden", "0"], True),
        (6, ["bogus"], True),
        (11, ["translate", "runs/t", "hello"], False),
        (12, ["translate", "train", "--src-file", "a", "--tgt-file", "b"], False),
    ]


def test_parse_accepts_and_refuses(parser):
    assert parse(parser, ["translate", "runs/t", "a sentence"]) is None  # the shorthand of kqv.cli.main
    assert parse(parser, ["--help"]) is None
    assert "invalid choice" in parse(parser, ["bogus"])
    assert "--hidden" in parse(parser, ["digits", "train", "--hidden", "0"])


def test_link_problems_on_made_up_links():
    readme = ROOT / "README.md"
    assert link_problem(readme, "docs/testing.md#step-1--digits") is None
    assert link_problem(readme, "#two-commands") is None
    assert link_problem(readme, "src/kqv/") is None
    assert "no heading" in link_problem(readme, "docs/testing.md#no-such-heading")
    assert "no heading" in link_problem(readme, "#no-such-heading")
    assert "does not exist" in link_problem(readme, "docs/nothing.md")
    assert "outside the repository" in link_problem(readme, "../elsewhere.md")
    assert "does not exist" in link_problem(readme, "runs/gpt/loss.png")


# --- Python snippets: each runs as printed ----------------------------------------------------------------

PYTHON_BLOCKS = [
    (f"{page.relative_to(ROOT).as_posix()}:{block.first_line}", "\n".join(block.lines))
    for page in PAGES
    for block in split_markdown(page.read_text(encoding="utf-8"))[1]
    if block.language == "python"
]
KITCHEN = [  # the kitchen run a snippet loads, made small: the same corpus and tokenizer, a few steps
    "gpt", "train", "--data", "embedded:kitchen", "--out", "runs/kitchen", "--preset", "tiny", "--set", "tokenizer=bpe",
    "--set", "bpe_vocab_size=400", "--steps", "20",
]  # fmt: skip


@pytest.fixture(scope="module")
def snippet_folder(tmp_path_factory):
    """A folder to run the snippets in, holding the runs they load (runs/kitchen)."""
    folder = tmp_path_factory.mktemp("snippets")
    subprocess.run([sys.executable, "-m", "kqv", *KITCHEN], cwd=folder, check=True, capture_output=True)
    return folder


def test_there_are_python_snippets_to_run():
    assert len(PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize(("where", "code"), PYTHON_BLOCKS, ids=[w for w, _ in PYTHON_BLOCKS])
def test_python_snippets_run_as_printed(where, code, snippet_folder):
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=snippet_folder, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{where}: the snippet fails:\n{result.stderr[-2000:]}"
