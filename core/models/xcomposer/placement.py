"""A decoder split over GPUs without accelerate's hooks: each module the plan puts on another device gets
a pre-hook that moves its tensor inputs there (hidden states, RoPE cos/sin, the mask), as
from_pretrained(device_map=...) would arrange."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True) if value.device != device else value
    if isinstance(value, tuple):
        return tuple(_moved(v, device) for v in value)
    if isinstance(value, list):
        return [_moved(v, device) for v in value]
    return value


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def align_devices(model: Any) -> None:
    """Hook every decoder layer, the final norm and the LM head to take their inputs on their own device."""
    llama = model.decoder.model
    for module in (*llama.layers, llama.norm, model.decoder.lm_head):
        device = _device_of(module)

        def move(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                 device: torch.device = device) -> tuple[tuple[Any, ...], dict[str, Any]]:
            return _moved(args, device), {key: _moved(value, device) for key, value in kwargs.items()}

        module.register_forward_pre_hook(move, with_kwargs=True)
