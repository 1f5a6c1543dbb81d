"""A local model's token streamer and cancel check (transformers): kept apart from streaming.py so that
a remote-only Loupe, which needs only streaming.py, never imports torch or transformers."""
from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from transformers import StoppingCriteria, TextIteratorStreamer

if TYPE_CHECKING:
    import torch

HAND_OVERS_PER_S = 20.0  # the most times a second the reader is woken with new text (pages redraw 5 a second)


class TimedStreamer(TextIteratorStreamer):
    """A TextIteratorStreamer with a reader timeout that notes whether it ended (when tokens came is the stage
    clock's business: core/telemetry/markers.py), and that hands text to its reader at most once every
    `hand_over_every_s`: the first text at once, text finalised sooner after the last hand-over is held and
    goes with the next token's, everything held goes at the end.

    Why: every hand-over wakes the reader thread, and the decoding thread pays for it (the reader takes the
    GIL, and on a busy CPU the wake-up can preempt the decoder). In the dashboard the reader is the scheduler's
    worker; py-spy on the demo model there showed 28 % of the decoding thread's time in the queue's notify,
    against none from the CLI (issue #17 item 1). Twenty hand-overs a second is still more than a page redraws.
    Text is held for at most one interval plus one token, so the reader's timeout still means "no token".
    """

    def __init__(self, tokenizer: Any, timeout_s: float, *, hand_over_every_s: float = 1.0 / HAND_OVERS_PER_S) -> None:
        super().__init__(tokenizer, skip_prompt=True, timeout=timeout_s, skip_special_tokens=True)
        self.ended = False
        self.hand_over_every_s = hand_over_every_s
        self._held: list[str] = []
        self._handed_at = -math.inf

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._held.append(text)
        now = time.perf_counter()
        if self._held and (stream_end or now - self._handed_at >= self.hand_over_every_s):
            self.text_queue.put("".join(self._held), timeout=self.timeout)
            self._held.clear()
            self._handed_at = now
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

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
