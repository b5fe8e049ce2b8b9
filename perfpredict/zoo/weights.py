"""Seeded random weight initialisation for zoo models (no pretrained weights are ever downloaded)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """Initialise every parameter and buffer of ``model`` from the global torch RNG.

    Conv: Kaiming-normal (fan_out, ReLU gain), bias ~ N(0, 0.01). Linear: weight and bias ~ N(0, 0.01).
    Biases are random rather than zero so that the ONNX exporter does not deduplicate identical
    initialisers into Identity nodes.
    BatchNorm: gamma ~ U(0.5, 1.0), beta ~ N(0, 0.1), running mean ~ N(0, 0.1), running var ~ U(0.5, 2.0),
    so folding BN into the preceding conv changes the weights non-trivially.
    Raises TypeError for a module type holding parameters that this function does not know.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                module.bias.normal_(0.0, 0.01)
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0.0, 0.01)
            if module.bias is not None:
                module.bias.normal_(0.0, 0.01)
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.0)
            module.bias.normal_(0.0, 0.1)
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.zero_()
        elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
            raise TypeError(f"init_weights does not know how to initialise {type(module).__name__}")
