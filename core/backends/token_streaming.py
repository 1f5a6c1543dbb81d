"""A local model's token streamer and cancel check (transformers): kept apart from streaming.py so that
a remote-only Loupe, which needs only streaming.py, never imports torch or transformers."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

from transformers import StoppingCriteria, TextIteratorStreamer

if TYPE_CHECKING:
    import torch


class TimedStreamer(TextIteratorStreamer):
    """A TextIteratorStreamer with a reader timeout that notes whether it ended (when tokens came is the stage
    clock's business: core/telemetry/markers.py)."""

    def __init__(self, tokenizer: Any, timeout_s: float) -> None:
        super().__init__(tokenizer, skip_prompt=True, timeout=timeout_s, skip_special_tokens=True)
        self.ended = False

    def end(self) -> None:
        self.ended = True
        super().end()


class CancelCriteria(StoppingCriteria):
    """Stops generate() at the next token once the event is set (user cancel, reader timeout)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kwargs: object) -> torch.BoolTensor:
        import torch

        stop = torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
        return cast("torch.BoolTensor", stop)  # torch's stubs type every tensor factory as plain Tensor


