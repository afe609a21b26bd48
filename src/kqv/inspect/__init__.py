"""Step 5: look inside a trained model.

- `cache`: hook points at every activation, `run_with_cache` and the `ActivationCache`.
- `explain`: one forward pass walked tensor by tensor, with parameter counts and FLOPs (`kqv explain`).
- `patterns`: every layer's attention patterns of one input, GPT or encoder–decoder (`kqv inspect`).
- `attention`: per-head summaries (entropy, previous/first/self token), top-attended keys, token labels.

Import the submodules directly (`from kqv.inspect.cache import run_with_cache`).
"""
