from pathlib import Path

import pytest

from kqv.data.text import read_corpus


@pytest.fixture(scope="package")
def corpus_20k(tmp_path_factory) -> Path:
    """The first 20,000 characters of tiny Shakespeare, as a file: enough for a tiny GPT's splits."""
    path = tmp_path_factory.mktemp("corpus") / "shakespeare-20k.txt"
    path.write_text(read_corpus(None).text[:20_000], encoding="utf-8")
    return path
