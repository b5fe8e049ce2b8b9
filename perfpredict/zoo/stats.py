"""Parameter and multiply-accumulate counts, used to check zoo models against published figures."""

from __future__ import annotations

import torch
from torch import nn

from perfpredict.zoo.registry import get_family
from perfpredict.zoo.spec import ModelSpec


def count_params(model: nn.Module) -> int:
    """Number of parameters (BatchNorm affine included, running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of all Conv2d and Linear layers for one forward pass at ``input_shape``.

    Runs on the device of the model's parameters, so a meta-device model is counted without compute.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        model(torch.zeros(input_shape, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return total


def model_stats(spec: ModelSpec) -> dict[str, int]:
    """``{"params": ..., "macs": ...}`` of ``spec`` at its input shape, computed on the meta device (fast)."""
    with torch.device("meta"):
        model = get_family(spec.family).builder(spec.params, spec.resolution).eval()
    return {"params": count_params(model), "macs": count_macs(model, spec.input_shape)}
