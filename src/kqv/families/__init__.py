"""Model families, registered in one place: the GPT and the encoder–decoder Transformer.

    family          runs (config.json "kind")   presets (--preset)                  kinds of attention
    gpt             "gpt"                       NAME: default, tiny, nanogpt-cpu, …  self
    translation     "translation"               translation/NAME (translate/NAME)    encoder, decoder, cross

Code that serves any model asks the family (kqv.families.base.Family: its config class, presets,
loader, length limit, attention, decoding, explanation) instead of branching on the family's name.
`load(run_dir)` loads any run, `load_subject(run=…)` / `load_subject(preset=…)` gives a model to look
inside, from a run or from a preset with random weights.
"""

from pathlib import Path

from kqv.config import preset_names
from kqv.errors import UserError
from kqv.families.base import Family, StepDecoder, Subject
from kqv.families.gpt import GPT_FAMILY
from kqv.families.translation import TRANSLATION_FAMILY
from kqv.runs.config_file import read_config
from kqv.runs.load import Run

FAMILIES: dict[str, Family] = {f.name: f for f in (GPT_FAMILY, TRANSLATION_FAMILY)}
PRESET_PREFIXES = {"translation": TRANSLATION_FAMILY, "translate": TRANSLATION_FAMILY}  # translate/…: an alias

__all__ = ["FAMILIES", "Family", "StepDecoder", "Subject", "family", "family_of", "load", "load_subject"]


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise UserError(f"unknown model family {name!r}; kqv knows {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(run_dir: str | Path) -> Family:
    """The family of a run directory, from its config.json's "kind"."""
    return family(read_config(Path(run_dir))["kind"])


def load(run_dir: str | Path, device: str = "cpu") -> Run:
    """Any run directory — a GPT, a translation model, an imported GPT-2 — with its best weights."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory; train one with `kqv gpt train --out {run_dir}`")
    return family_of(run_dir).load(run_dir, device)


def all_preset_names() -> list[str]:
    return [*preset_names("gpt"), *(f"translation/{n}" for n in preset_names("translation"))]


def parse_preset(spec: str) -> tuple[Family, str]:
    """ "tiny" -> (the GPT family, "tiny"); "translation/tiny" (or "translate/tiny") -> (translation, "tiny")."""
    prefix, _, name = spec.rpartition("/")
    found = GPT_FAMILY if not prefix else PRESET_PREFIXES.get(prefix)
    if found is None:
        raise UserError(f"--preset {spec}: use NAME for a GPT preset or translation/NAME for a translation preset")
    if name not in preset_names(found.name):
        raise UserError(f"--preset {spec}: no such preset; choose one of {', '.join(all_preset_names())}")
    return found, name


def load_subject(run: str | None = None, preset: str | None = None, seed: int = 0) -> Subject:
    """A trained run (its config.json says which family) or a preset with random weights."""
    if (run is None) == (preset is None):
        raise UserError("give a run directory or --preset NAME (one of them, not both)")
    if preset is not None:
        fam, name = parse_preset(preset)
        model, tokenizer = fam.random_model(name, seed)
        out = Path("runs") / f"inspect-{preset.replace('/', '-')}"
        return Subject(fam, model, tokenizer, f"preset {preset} (random weights, seed {seed})", out)
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise UserError(
            f"{run_dir}: no such run directory; train one with `kqv gpt train --out {run_dir}`, "
            "or look at a model with random weights: kqv inspect --preset tiny TEXT"
        )
    loaded = load(run_dir)
    return Subject(family(loaded.kind), loaded.model, loaded.tokenizer, str(run_dir), run_dir / "inspect")
