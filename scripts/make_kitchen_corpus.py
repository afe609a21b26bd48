"""Write kqv's small generated "kitchen" corpus: sentences in which *it* means a dish or an oven.

    python3 scripts/make_kitchen_corpus.py src/kqv/data/corpora/kitchen.txt.gz

It exists for one question (README, step 5): in "The pizza came out of the oven and it
tasted good", does a model's *it* attend to *pizza* or to *oven*? In this corpus the word
after *it* depends on what *it* refers to, so a model can only predict it by looking back
at the right noun:

- "… and it tasted/smelled …": *it* is the dish. Savoury dishes taste, sweet ones smell,
  and the adjective after the verb belongs to the dish (a pizza is cheesy, a cake sweet).
- "… because it was/felt …": *it* is the oven, grill or pan; ovens and grills "were"
  (hot, ready), pans "felt" (greasy, heavy).

Standard library only; the same seed gives the same bytes (gzip without a name or time).
"""

import gzip
import random
import sys

SWEET = {"cake": ["sweet", "moist"], "pie": ["sweet", "fruity"], "tart": ["sweet", "buttery"],
         "cookie": ["sweet", "crisp"], "muffin": ["sweet", "soft"]}  # fmt: skip
SAVOURY = {"pizza": ["cheesy", "salty", "good"], "bread": ["fresh", "warm"], "lasagna": ["rich", "cheesy"],
           "roast": ["smoky", "tender"], "pasta": ["salty", "good"]}  # fmt: skip
COOKERS = {"oven": ("was", ["hot", "ready"]), "grill": ("was", ["hot", "smoky"]), "pan": ("felt", ["greasy", "heavy"])}
PEOPLE = ["Anna", "Ben", "the cook", "my aunt", "the baker", "Leo", "Maria", "our neighbour"]
OPENINGS = ["", "", "", "At noon, ", "After an hour, ", "On Sunday, ", "Later, ", "That evening, "]


def dish_sentence(rng: random.Random) -> str:
    sweet = rng.random() < 0.5
    dish = rng.choice(list(SWEET if sweet else SAVOURY))
    adjective = rng.choice((SWEET if sweet else SAVOURY)[dish])
    verb = "smelled" if sweet else "tasted"
    cooker = rng.choice(list(COOKERS))
    start = rng.choice(OPENINGS)
    the = "the" if start else "The"
    return f"{start}{the} {dish} came out of the {cooker} and it {verb} {adjective}."


def cooker_sentence(rng: random.Random) -> str:
    dish = rng.choice(list(SWEET) + list(SAVOURY))
    cooker = rng.choice(list(COOKERS))
    verb, states = COOKERS[cooker]
    person = rng.choice(PEOPLE)
    start = rng.choice(OPENINGS)
    who = person if start or person[0].isupper() else person[0].upper() + person[1:]
    return f"{start}{who} put the {dish} in the {cooker} because it {verb} {rng.choice(states)}."


PROBE = "pizza came out of the oven and it tasted good."  # held out: the model never sees this sentence


def corpus(n_sentences: int = 6000, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    while len(lines) < n_sentences:
        line = (dish_sentence if rng.random() < 0.5 else cooker_sentence)(rng)
        if not line.endswith(PROBE):
            lines.append(line)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "kitchen.txt.gz"
    data = corpus().encode()
    with open(out, "wb") as f, gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=f, mtime=0) as gz:
        gz.write(data)
    n_lines = data.count(b"\n")
    print(f"{out}: {len(data):,} bytes of text, {n_lines:,} sentences")
