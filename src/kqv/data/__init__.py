"""Data sets: digits (embedded 8×8 and MNIST-format IDX files), later text corpora and pairs."""
