"""What the stage clock (core/telemetry/markers.py QueryClock) needs from inside a transformers model: where
its vision tower is (the clock hooks it), and the first-token / cancel check generate() calls after every
token (FirstTokenMark)."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, cast

from transformers import StoppingCriteria

from core.telemetry import markers

if TYPE_CHECKING:
    import torch

_VISION_ATTRS = ("vision_tower", "vision_model", "visual", "vit", "vision_encoder")


def find_vision_module(model: object) -> torch.nn.Module | None:
    """The vision tower, wherever this architecture keeps it (for timing the vision stage)."""
    import torch

    for owner in (model, getattr(model, "model", None)):
        for attr in _VISION_ATTRS:
            module = getattr(owner, attr, None) if owner is not None else None
            if isinstance(module, torch.nn.Module):
                return module
    return None


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

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kwargs: object) -> torch.BoolTensor:
        import torch

        self.after_token()
        stop = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return cast("torch.BoolTensor", stop)  # torch's stubs type every tensor factory as plain Tensor
