"""Benchmarks: each times kqv against a baseline measured in the same run."""
