"""One answer alone on the fast path (FastDecoder.generate): prefill, then one compiled step per token, each
launched before the last token is read (token_readback.py), tokens streamed as they are read."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from core.models.token_readback import TokenReadback

if TYPE_CHECKING:
    from transformers.generation.streamers import BaseStreamer

    from core.models.fast_decode import FastDecoder


def answer_alone(fast: FastDecoder, inputs: dict[str, torch.Tensor], max_new_tokens: int, repetition_penalty: float,
                 eos_ids: set[int], streamer: BaseStreamer | None,
                 should_stop: Callable[[], bool] | None) -> torch.Tensor:
    """Prompt + greedy new ids, as generate() returns them; on the decoder's own thread."""
    try:
        return _decode(fast, inputs, max_new_tokens, repetition_penalty, eos_ids, streamer, should_stop)
    finally:
        # The prompt's hidden states must not outlive the request, above all a failed one (an out-of-memory
        # error after prefill): the next request's memory baseline would be off by them.
        fast._prefill_hidden = None


def _launch(fast: FastDecoder, token: torch.Tensor, pos: torch.Tensor, penalty: torch.Tensor, at: int) -> torch.Tensor:
    """Queue one decode step of row 0 for the token at position `at`."""
    pos.fill_(at)
    return fast.replay_step(token, pos, penalty, at)


@torch.no_grad()
def _decode(fast: FastDecoder, inputs: dict[str, torch.Tensor], max_new_tokens: int, repetition_penalty: float,
            eos_ids: set[int], streamer: BaseStreamer | None, should_stop: Callable[[], bool] | None) -> torch.Tensor:
    input_ids = inputs["input_ids"]
    length = fast.prefill(inputs)
    max_new_tokens = min(max_new_tokens, fast.max_len - length)
    if streamer is not None:
        streamer.put(input_ids.cpu())
    penalty = torch.full((1,), repetition_penalty, device=fast.device, dtype=torch.float32)
    assert fast._prefill_hidden is not None
    token = fast._next_tokens(fast._prefill_hidden, penalty.view(-1, 1))
    pos = torch.zeros(1, dtype=torch.long, device=fast.device)
    readback = TokenReadback(fast.device, 1, fast.read_ahead)
    produced = []
    for step in range(max_new_tokens):
        pending = readback.start(token)
        more = step < max_new_tokens - 1
        if more and readback.ahead:  # the next step runs while this token is read (token_readback.py)
            token = _launch(fast, token, pos, penalty, length + step)
        value = readback.read(pending)[0]
        produced.append(value)
        if streamer is not None:
            streamer.put(torch.tensor([value]))
        if value in eos_ids or not more or (should_stop is not None and should_stop()):
            break
        if not readback.ahead:
            token = _launch(fast, token, pos, penalty, length + step)
    if streamer is not None:
        streamer.end()
    new = torch.tensor([produced], dtype=input_ids.dtype, device=input_ids.device)
    return torch.cat([input_ids, new], dim=1)
