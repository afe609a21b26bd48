"""kqv: from neural networks to GPT, built from scratch, fast, and open to inspection."""

__version__ = "0.1.0"
