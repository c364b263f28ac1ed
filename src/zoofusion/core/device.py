"""The arithmetic on a device: float32 everywhere, GPU included (speed may not silently change the numbers)."""

from __future__ import annotations

import torch


def fp32_only(device: str | torch.device) -> None:
    """float32 arithmetic on `device`, as on CPU: on a GPU cuDNN would otherwise run convolutions in TF32. The flags
    are global to a process, so every process that computes on a GPU (a stage, each of its workers) calls this."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
