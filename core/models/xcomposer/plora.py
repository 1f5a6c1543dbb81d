"""Partial-LoRA: a linear layer that adds B(A(x)) only at the prompt's image positions.

XComposer2.5 gives each of wqkv, wo, w1, w2 and w3 a rank-256 LoRA (`Plora_A`, `Plora_B`, scaling
alpha/r = 1) used only where the current forward's image mask is set. The mask is set by the model for the
prompt's forward (ImagePositions.armed) and is None otherwise, so every decode step, and every prompt
without an image, is exactly the plain linear layer (what the fast decode path relies on).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ImagePositions:
    """The image mask of the forward now running ([batch, positions] bool), shared by every PLoRA layer."""

    def __init__(self) -> None:
        self._mask: torch.Tensor | None = None
        self._on_device: dict[torch.device, torch.Tensor] = {}

    @contextmanager
    def armed(self, mask: torch.Tensor | None) -> Iterator[None]:
        """Set for one forward (the prompt's); cleared afterwards whatever happens."""
        self._mask = mask if mask is not None and bool(mask.any()) else None
        self._on_device = {}
        try:
            yield
        finally:
            self._mask, self._on_device = None, {}

    def mask_for(self, x: torch.Tensor) -> torch.Tensor | None:
        """The mask on x's device when x is the masked forward's input (same positions), else None."""
        mask = self._mask
        if mask is None or mask.shape != x.shape[:-1]:
            return None
        if x.device not in self._on_device:  # a decoder split over GPUs: one copy per device, made once
            self._on_device[x.device] = mask.to(x.device)
        return self._on_device[x.device]


class PartialLoRALinear(nn.Linear):
    """nn.Linear plus `lora_b(lora_a(x))` at image positions (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, rank: int, positions: ImagePositions,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.lora_a = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.lora_b = nn.Linear(rank, out_features, bias=False, device=device, dtype=dtype)
        self.positions = positions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        mask = self.positions.mask_for(x)
        if mask is not None:
            out[mask] += self.lora_b(self.lora_a(x[mask]))
        return out
