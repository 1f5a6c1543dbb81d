"""Reading a decode step's tokens on the host without stalling the GPU.

A decode step needs no host value: its input token is the previous step's output, still on the device. So the
fast path launches step n+1 first and reads step n's tokens second (one step ahead): the GPU works through
the next step while the host hands the token to the streamer, checks the end conditions and prepares the
launch after it. `.item()` or `.tolist()` would wait for everything queued, the step just launched included,
so the tokens are copied into pinned host memory behind an event and only that event is waited for.
The cost: when an answer ends, one step already launched is thrown away (its row's cache write lands beyond
the answer's last position, and the next prefill into that row resets the row). On the CPU every operation
is synchronous, so there is nothing to overlap: tokens are read at once and no step is launched ahead.
"""
from __future__ import annotations

import torch


class TokenReadback:
    """Two pinned buffers used in turn: one step's tokens in flight, the previous step's being read."""

    def __init__(self, device: torch.device, size: int, ahead: bool | None = None) -> None:
        # Whether callers launch the next step before reading (tests ask for it on the CPU: same order, no overlap).
        self.ahead = device.type == "cuda" if ahead is None else ahead
        self._pinned = self.ahead and device.type == "cuda"
        self._turn = 0
        if self._pinned:
            self._buffers = [torch.empty(size, dtype=torch.long, pin_memory=True) for _ in range(2)]
            self._events = [torch.cuda.Event() for _ in range(2)]

    def start(self, tokens: torch.Tensor) -> object:
        """Begin copying `tokens` (on the device, at most `size`) to the host; `read` the handle later."""
        if not self._pinned:
            return tokens.clone()  # a snapshot: the caller may write into `tokens` before reading
        turn, self._turn = self._turn, 1 - self._turn
        buffer = self._buffers[turn][: tokens.shape[0]]
        buffer.copy_(tokens, non_blocking=True)
        self._events[turn].record()
        return buffer, self._events[turn]

    @staticmethod
    def read(handle: object) -> list[int]:
        """The tokens of a `start`ed copy, waiting only for that copy (not for steps launched after it)."""
        if isinstance(handle, torch.Tensor):
            return handle.tolist()
        assert isinstance(handle, tuple)
        buffer: torch.Tensor = handle[0]
        event: torch.cuda.Event = handle[1]
        event.synchronize()
        return buffer.tolist()
