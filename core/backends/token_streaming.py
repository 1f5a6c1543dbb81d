"""A local model's token streamer and cancel check (transformers): kept apart from streaming.py so that
a remote-only Loupe, which needs only streaming.py, never imports torch or transformers."""
from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from tokenizers.decoders import DecodeStream
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

    With a fast tokenizer, tokens become text through its incremental decoder (tokenizers' DecodeStream: each
    token's text, a character held back only while its bytes are incomplete), not transformers' way of decoding
    the whole line so far at every token: that cost 95 µs a token on the demo model on a 2-core CPU, and grows
    with the line; DecodeStream 2 µs. The decoding thread pays it, once per token per answer: with 8 answers in
    the continuous batcher's rows, 8 times a step. A slow (Python) tokenizer keeps transformers' decoding.
    """

    def __init__(self, tokenizer: Any, timeout_s: float, *, hand_over_every_s: float = 1.0 / HAND_OVERS_PER_S) -> None:
        super().__init__(tokenizer, skip_prompt=True, timeout=timeout_s, skip_special_tokens=True)
        self.ended = False
        self.hand_over_every_s = hand_over_every_s
        self._held: list[str] = []
        self._handed_at = -math.inf
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._pieces = DecodeStream(skip_special_tokens=True) if self._backend is not None else None

    def put(self, value: torch.Tensor) -> None:
        if self._pieces is None or self._backend is None:
            super().put(value)
            return
        if value.dim() > 1:
            value = value[0]
        if self.next_tokens_are_prompt:  # the prompt comes first, and is not shown
            self.next_tokens_are_prompt = False
            return
        pieces = (self._pieces.step(self._backend, token) for token in value.tolist())
        self.on_finalized_text("".join(piece for piece in pieces if piece))

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
        if self._pieces is None:
            super().end()
            return
        self.next_tokens_are_prompt = True
        self._pieces = DecodeStream(skip_special_tokens=True)  # incomplete bytes at the end are dropped
        self.on_finalized_text("", stream_end=True)


class CancelCriteria(StoppingCriteria):
    """Stops generate() at the next token once the event is set (user cancel, reader timeout)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kwargs: object) -> torch.BoolTensor:
        import torch

        stop = torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
        return cast("torch.BoolTensor", stop)  # torch's stubs type every tensor factory as plain Tensor
