"""Will it fit? A lower bound on the memory a model needs, checked before anything is allocated.

`--set n_embd=1000000` or `--set batch_size=100000000` would otherwise end in an allocation
failure deep inside torch (or the machine swapping for minutes). The counts here are exact
for the parameters and a floor for the rest, so a refusal is never a false alarm:

    parameters P                 counted from the config (embeddings, positions, every layer)
    training, per parameter      weights, gradient and AdamW's two moments: 4 numbers, 16 bytes
    training activations         the logits and their gradient (B·T·V·2) and about 10 numbers per
                                 layer and position (B·T·C·10·L), 4 bytes each
    evaluation batches           the fixed batches, int64 inputs and targets, train and val sets
    decoding                     the weights (4·P bytes) and a KV cache of block_size positions

Available memory is MemAvailable (Linux /proc/meminfo), lowered by a cgroup limit when one
is set; on a CUDA device, the GPU's free memory. Where neither is known, nothing is checked.
"""

from pathlib import Path

import torch

from kqv.config import GPTConfig, TrainConfig, TransformerConfig
from kqv.errors import UserError

F32 = 4


def gpt_parameters(c: GPTConfig) -> int:
    """Parameters (and position-table buffers) of kqv.models.gpt.GPT: the tied LM head counts once."""
    C, L, bias = c.n_embd, c.n_layer, int(c.bias)
    per_layer = 12 * C * C + (2 + 2 * bias) * C + bias * (3 * C + C + 4 * C + C)  # attn, MLP, two LayerNorms
    table = c.block_size * C if c.pos_encoding in ("learned", "sinusoidal") else 0
    return c.vocab_size * C + table + L * per_layer + (1 + bias) * C


def transformer_parameters(c: TransformerConfig) -> int:
    """Parameters (and the sinusoid table) of kqv.models.transformer.Transformer, roughly to the bias."""
    d, f = c.n_embd, c.d_ff
    encoder = c.n_layer_enc * (4 * d * d + 2 * d * f)
    decoder = c.n_layer_dec * (8 * d * d + 2 * d * f)
    table = c.max_len * d if c.pos_encoding in ("learned", "sinusoidal") else 0
    return c.vocab_size * d + table + encoder + decoder


def available_bytes(device: str = "cpu") -> int | None:
    """Memory this process can still get on `device`, or None when it cannot be told."""
    if device.startswith("cuda"):
        try:
            return int(torch.cuda.mem_get_info()[0])
        except (RuntimeError, AssertionError):
            return None
    if not device.startswith("cpu"):
        return None
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v2: a container's limit, less what it uses already
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def gigabytes(n: float) -> str:
    if n >= 1e12:
        return f"{n / 1e12:,.1f} TB"
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.0f} MB"


def check_fits(need: int, what: str, advice: str, device: str = "cpu") -> None:
    have = available_bytes(device)
    if have is not None and need > have:
        raise UserError(f"{what} needs at least {gigabytes(need)} of memory but {gigabytes(have)} is free; {advice}")


def gpt_training_bytes(c: GPTConfig, t: TrainConfig) -> int:
    P = gpt_parameters(c)
    B, T = t.batch_size, c.block_size
    activations = F32 * B * T * (2 * c.vocab_size + 10 * c.n_layer * c.n_embd)
    evaluation = 2 * t.eval_iters * B * T * 2 * 8  # two sets of (x, y), int64
    return 4 * F32 * P + activations + evaluation


def transformer_training_bytes(c: TransformerConfig, t: TrainConfig) -> int:
    P = transformer_parameters(c)
    layers = c.n_layer_enc + c.n_layer_dec
    activations = F32 * t.batch_tokens * (2 * c.vocab_size + 10 * layers * c.n_embd)
    return 4 * F32 * P + activations


def check_gpt_training(c: GPTConfig, t: TrainConfig, device: str = "cpu") -> None:
    check_fits(
        gpt_training_bytes(c, t),
        f"training this GPT ({gpt_parameters(c):,} parameters, batches of {t.batch_size:,} × {c.block_size:,} tokens, "
        f"{t.eval_iters:,} evaluation batches)",
        "lower n_embd, n_layer, block_size, batch_size or eval_iters",
        device,
    )


def check_transformer_training(c: TransformerConfig, t: TrainConfig, device: str = "cpu") -> None:
    check_fits(
        transformer_training_bytes(c, t),
        f"training this Transformer ({transformer_parameters(c):,} parameters, batches of {t.batch_tokens:,} tokens)",
        "lower n_embd, d_ff, the layers, vocab_size, max_len or batch_tokens",
        device,
    )


def check_gpt_loading(c: GPTConfig, where: str, device: str = "cpu") -> None:
    """The weights of a saved GPT and a one-text KV cache of block_size positions."""
    cache = 2 * c.n_layer * c.block_size * c.n_embd * F32
    check_fits(F32 * gpt_parameters(c) + cache, f"{where}: this GPT", "its config.json may be damaged", device)


def check_transformer_loading(c: TransformerConfig, where: str, device: str = "cpu") -> None:
    check_fits(F32 * transformer_parameters(c), f"{where}: this Transformer", "its config.json may be damaged", device)
