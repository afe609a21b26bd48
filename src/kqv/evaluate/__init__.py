"""Scoring trained models: perplexity from plain NLL (GPT and translation), BLEU and chrF through sacrebleu."""
