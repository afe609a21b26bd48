"""The optimizer half of checkpointing: AdamW's state as flat tensors beside the weights in trainer.safetensors.

    optim.{param index}.{exp_avg | exp_avg_sq | step}   one tensor each
    metadata "optimizer": the param groups (hyperparameters, parameter indices), how many parameters
                          have a state, and which keys

A resume that would lose any of it — a missing tensor, a group that does not fit the model, a moment of
the wrong shape — is a loud error, never a silent reset of the optimizer.
"""

import torch

from kqv.errors import UserError


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW state as flat tensors 'optim.{param index}.{exp_avg|exp_avg_sq|step}' + JSON param groups.

    Before the first step AdamW has no state; `n_states` records how many parameters have one,
    so a resume can tell "nothing yet" from "lost".
    """
    state = optimizer.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().clone().cpu()
    keys = sorted({k for entry in state["state"].values() for k in entry})
    return tensors, {"param_groups": state["param_groups"], "n_states": len(state["state"]), "keys": keys}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, where: str) -> None:
    """Restore AdamW exactly; any missing or malformed piece of its state is a loud error, never a silent reset."""
    info = meta.get("optimizer")
    if not isinstance(info, dict) or "n_states" not in info:
        raise UserError(f"{where}: no optimizer state in the checkpoint; it cannot resume exactly")
    own = optimizer.state_dict()["param_groups"]
    groups = info.get("param_groups")
    try:
        saved_params = [list(group["params"]) for group in groups]
        keys = [str(k) for k in info["keys"]]
    except (KeyError, TypeError):
        raise UserError(f"{where}: damaged: the optimizer's parameter groups are malformed") from None
    if saved_params != [group["params"] for group in own]:
        raise UserError(f"{where}: the optimizer state was saved for other parameters; it does not fit this model")
    if any(set(g) != set(o) for g, o in zip(groups, own, strict=True)):
        raise UserError(f"{where}: damaged: the optimizer's settings per parameter group are incomplete")
    indices = [i for params in saved_params for i in params]
    expected_states = len(indices) if info["n_states"] else 0
    if expected_states and not any(k.startswith("optim.") for k in tensors):
        raise UserError(f"{where}: no optimizer state in the checkpoint; it cannot resume exactly")
    if info["n_states"] != expected_states:
        raise UserError(f"{where}: optimizer state covers {info['n_states']} of {len(indices)} parameters")
    shapes = dict(zip(indices, (p.shape for group in optimizer.param_groups for p in group["params"]), strict=True))
    state: dict[int, dict] = {}
    for index in indices[:expected_states]:
        entry = {}
        for key in keys:
            name = f"optim.{index}.{key}"
            if name not in tensors:
                raise UserError(f"{where}: optimizer state {name} is missing; it cannot resume exactly")
            value = tensors[name]
            if key in ("exp_avg", "exp_avg_sq") and value.shape != shapes[index]:
                raise UserError(f"{where}: optimizer state {name} has shape {tuple(value.shape)}, not the parameter's")
            if key == "step" and not (value.numel() == 1 and float(value) >= 0 and float(value).is_integer()):
                raise UserError(f"{where}: optimizer state {name} is not a step count")
            entry[key] = value
        state[index] = entry
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{where}: the optimizer state does not fit this model ({exc})") from None
