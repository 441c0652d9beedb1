"""Device and precision choice: CUDA, then MPS, then CPU; fp32 unless bf16/fp16 autocast is asked for."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .errors import EngineError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit choice is an error."""
    if name not in DEVICES:
        raise EngineError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    cuda, mps = torch.cuda.is_available(), getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise EngineError(f"device {name!r} is not available on this machine (use --device cpu or auto)")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` is fp32 on every device; bf16 and fp16 are opt-in.

    Measured on an H200 with the shipped ``small`` model (``bench/gpu.json``): fp16 and bf16
    autocast are no faster than fp32 (7.7 / 7.6 / 7.9 MP/s at 512 px tiles; a model this narrow
    is bound by memory traffic and kernel launches, not matrix units), and they differ from
    fp32 by 0.0024 (fp16) and 0.019 (bf16) noise sigma on average. On native-bf16 CPUs bf16 can
    be faster at small tiles (README's speed table). fp16 on the CPU is refused (slow and
    inaccurate there).
    """
    if name not in PRECISIONS:
        raise EngineError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        raise EngineError("fp16 is not supported on the CPU; use fp32 or bf16")
    return name


def autocast(device: torch.device, precision: str):
    """The autocast context for a resolved precision (``nullcontext`` for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
