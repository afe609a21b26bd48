"""Step 3 of the path: the pieces attention is built from, each chosen by a string.

- `masks`: which keys each query may see ("causal", "none", "anticausal", "window:N").
- `scores`: how a query scores a key ("scaled_dot", "dot", "squared_dot", "cosine", "additive").
- `positional`: how position enters the model ("sinusoidal", "learned", "rope", "alibi", "none").

Import the submodules directly (`from kqv.nn.masks import parse_mask`); this file imports nothing.
"""
