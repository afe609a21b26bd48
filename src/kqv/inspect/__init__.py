"""Step 5: look inside a trained model — where it looks, and what it uses.

Where it looks:
- `cache`: hook points at every activation, `run_with_cache` and the `ActivationCache`.
- `explain`: one forward pass walked tensor by tensor, with parameter counts and FLOPs (`kqv explain`).
- `patterns`: every layer's attention patterns of one input, GPT or encoder–decoder (`kqv inspect`).
- `attention`: per-head summaries (entropy, previous/first/self token), top-attended keys, token labels.

What it uses (`kqv why`), each method of one prediction measured as a `contrast.Contrast`:
- `lens`: the logit lens; `dla`: direct logit attribution; `patching`: activation patching and head ablation;
  `rollout`: attention rollout and flow; `gradients`: gradient × input and integrated gradients;
  `heads`: previous-token, duplicate-token, induction and first-token head detectors;
  `source`: the same questions for the encoder–decoder (each output token against the source).
- `prompt`: the input every method takes; `why` and `source_why`: one question answered by every method.

Import the submodules directly (`from kqv.inspect.cache import run_with_cache`).
"""
