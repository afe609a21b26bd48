"""The lab's built-in grids, as plain text: each a list of (variant, the question it answers).

Plain strings, so that building the command line (`kqv lab run --grid …`) imports nothing heavy;
kqv.lab.variants.grid_variants parses them.
"""

GRID_SPECS: dict[str, tuple[tuple[str, str], ...]] = {
    "scores": (
        ("score=scaled_dot", "baseline: q·kᵀ/√hs"),
        ("score=dot", "no 1/√hs scale"),
        ("score=squared_dot", "square the numbers first: (q⊙q)·(k⊙k)ᵀ/√hs"),
        ("score=dot_squared", "square the dot product instead: (q·kᵀ/√hs)²"),
        ("score=negated_dot", "the literal inverse: −q·kᵀ/√hs"),
        ("score=neg_distance", "a distance, inverted: −‖q−k‖²/√hs"),
        ("score=cosine", "cosine similarity with a learned temperature"),
        ("score=additive", "Bahdanau's small network"),
    ),
    "masks": (
        ("mask=causal", "baseline: hide the upper-right triangle (the future)"),
        ("mask=anticausal", "hide the lower-left triangle (the past) instead"),
        ("mask=none", "hide nothing"),
        ("mask=window:8", "see only the last 8 tokens"),
    ),
    "positions": (
        ("pos=sinusoidal", "sin and cos of the position (Vaswani et al.)"),
        ("pos=learned", "baseline: a learned vector per position (GPT-2)"),
        ("pos=rope", "rotate q and k by the position"),
        ("pos=alibi", "a distance penalty added to the scores"),
        ("pos=none", "no position information at all"),
    ),
    "seed-questions": (
        ("score=scaled_dot", "baseline: why the dot product? (compare with the rest)"),
        ("score=squared_dot", "what if we square the numbers first?"),
        ("score=negated_dot", "what if we use the inverse of it?"),
        ("score=neg_distance", "what if we use an inverse distance instead?"),
        ("mask=anticausal", "what if we mask the lower-left half instead of the upper-right?"),
        ("pos=sinusoidal", "why sin and cos for positions? (vs learned, the baseline)"),
        ("pos=none", "why positions at all?"),
    ),
}
