"""Timing the stages of one answer from inside the model: the vision tower's forward hooks (VisionClock)
and the first-token / cancel check generate() calls after every token (FirstTokenMark)."""
from __future__ import annotations

import threading
import time
from typing import Any

from transformers import StoppingCriteria

from core.models import memory
from core.telemetry import markers

_VISION_ATTRS = ("vision_tower", "vision_model", "visual", "vit", "vision_encoder")


def find_vision_module(model: Any) -> Any:
    """The vision tower, wherever this architecture keeps it (for timing the vision stage)."""
    import torch

    for owner in (model, getattr(model, "model", None)):
        for attr in _VISION_ATTRS:
            module = getattr(owner, attr, None) if owner is not None else None
            if isinstance(module, torch.nn.Module):
                return module
    return None


class VisionClock:
    """Forward hooks on the vision tower that add up its time (CUDA-synchronised on a GPU)."""

    def __init__(self, module: Any, on_cuda: bool) -> None:
        self.seconds = 0.0
        self._started: float | None = None
        self._on_cuda = on_cuda
        self._handles = []
        if module is not None:
            self._handles = [module.register_forward_pre_hook(self._before), module.register_forward_hook(self._after)]

    def reset(self) -> None:
        self.seconds, self._started = 0.0, None

    def _before(self, *_: Any) -> None:
        if self._on_cuda:
            memory.synchronize()
        self._started = time.perf_counter()

    def _after(self, *_: Any) -> None:
        if self._on_cuda:
            memory.synchronize()
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class FirstTokenMark(StoppingCriteria):
    """Never stops generation itself: tells the stage clock when the first new token exists (prefill →
    decode), and notes whether the cancel event was set while tokens were still coming. That, not
    `cancel.is_set()` afterwards, says a generation was cancelled: the reader sets the event when it
    finishes reading, which can be after the last token but before generate() has returned."""

    def __init__(self, marks: markers.QueryClock, cancel: threading.Event) -> None:
        self.marks = marks
        self.cancel = cancel
        self.saw_cancel = False

    def after_token(self) -> bool:
        """Called after every new token (by generate() through __call__, or by the fast decoder): stop?"""
        self.marks.first_token()
        self.saw_cancel = self.saw_cancel or self.cancel.is_set()
        return self.saw_cancel

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.after_token()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
