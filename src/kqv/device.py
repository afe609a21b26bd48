"""Which device a command runs on, and in which precision: one policy for every model.

--device    auto: CUDA if torch sees a GPU, else Apple's Metal (mps), else the CPU
autocast    bf16 where the hardware computes it fast: a CUDA GPU with bf16, or (for the
            translation Transformer, where it measured 1.7× faster) a CPU with AVX-512 BF16;
            fp32 elsewhere. The GPT stays fp32 on the CPU, so CPU runs stay comparable.
TF32        on CUDA, float32 matmuls and convolutions use TF32 tensor cores (a 10-bit
            mantissa, which training does not notice)
"""

import torch

from kqv.errors import UserError


def pick_device(name: str) -> str:
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps: Apple's Metal backend is not available here; use --device cpu or auto")
    return name


def configure_device(device: str) -> None:
    """CUDA: float32 matmuls and convolutions in TF32 (tensor cores; a 10-bit mantissa, which
    training does not notice). Other devices are left as they are."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def cpu_has_fast_bf16() -> bool:
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def amp_dtype(device: str, precision: str = "auto", bf16_on_cpu: bool = False) -> torch.dtype | None:
    """The autocast dtype for `precision` ("auto", "bf16", "fp32") on `device`, or None for fp32.

    "auto" takes bf16 where it is fast: CUDA with bf16 support, and the CPU when `bf16_on_cpu`
    (the family's choice) and the CPU has AVX-512 BF16. "bf16" where it is not fast is a UserError."""
    if precision == "fp32":
        return None
    if device.startswith("cuda"):
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = device == "cpu" and cpu_has_fast_bf16() and (bf16_on_cpu or precision == "bf16")
    if precision == "bf16" and not supported:
        raise UserError(f"--precision bf16: {device} here has no fast bf16 support; use --precision fp32 or auto")
    return torch.bfloat16 if supported else None
