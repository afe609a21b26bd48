"""Save and load a digits network: safetensors weights with a JSON config inside.

The file holds `layers.{i}.weight` (n_{i+1}, n_i) and `layers.{i}.bias` (n_{i+1},)
in the network's dtype (float32 or float64), and under the metadata key "kqv" a JSON object with the layer sizes,
the cost, and whatever the caller adds (data source, training history, how to
normalise a user's image). No pickle anywhere: loading runs no code.
"""

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from kqv.errors import UserError
from kqv.fileio import atomic_write_bytes
from kqv.scratch.network import Network

FORMAT = "kqv.digits.network/1"


def save_network(path: str | Path, net: Network, extra: dict | None = None) -> Path:
    config = {"format": FORMAT, "sizes": net.sizes, "cost": net.cost.name, **(extra or {})}
    tensors = {name: np.ascontiguousarray(p) for name, p in net.parameters().items()}
    return atomic_write_bytes(path, save_tensors(tensors, metadata={"kqv": json.dumps(config)}))


def load_network(path: str | Path) -> tuple[Network, dict]:
    """-> (network, config). Any problem with the file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file; train one with `kqv digits train --out {path}`")
    raw = path.read_bytes()
    try:
        tensors = load_tensors(raw)
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {})
        config = json.loads(metadata["kqv"])
    except (SafetensorError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a complete kqv digits model ({exc}); retrain or pick another file") from None
    if config.get("format") != FORMAT:
        raise UserError(f"{path}: format {config.get('format')!r} is not {FORMAT!r}; it is not a digits model")
    try:
        dtype = tensors["layers.0.weight"].dtype
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"weights are {dtype}, expected float32 or float64")
        net = Network(config["sizes"], cost=config["cost"], dtype=dtype)
        net.load_parameters(tensors)
    except (KeyError, ValueError) as exc:
        raise UserError(f"{path}: weights do not match the stored config ({exc})") from None
    return net, config
