"""The fast decode path (core/models/fast_decode.py) for XComposer2.5.

Its own prefill runs the fast path's plain layers on the prompt's embeddings, which would leave out the
Partial-LoRA at image positions. Here the model runs the prompt itself (image encoder, LoRA, SDPA), and its
KV cache is copied into the fast path's static cache; the last position's hidden state gives the first
token. Every later token is text, so the fast path's plain decode step is exactly the model's.
`inputs` for generate(): "input_ids" (what the repetition penalty counts as prompt: see answering.py) and
"xcomposer" (the XComposerInputs).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from core.models.decode_attention import DecodeAttention
from core.models.fast_decode import FastDecoder
from core.models.xcomposer.answering import XComposerInputs, prompt_embeds
from core.models.xcomposer.model import XComposerModel, as_decoder_view

if TYPE_CHECKING:
    from transformers.generation.streamers import BaseStreamer


class XComposerFastDecoder(FastDecoder):
    """FastDecoder whose prefill is the XComposer model's own forward (see the module docstring)."""

    def __init__(self, model: XComposerModel, max_len: int, compile: bool | None = None,
                 attention: DecodeAttention | None = None) -> None:
        super().__init__(as_decoder_view(model), max_len, compile=compile, attention=attention)
        self.xcomposer = model
        self.shares_prefixes = False  # its prompt's K/V come from its own forward (Partial-LoRA on image tokens)
        self.packs_prefills = False  # the same: each prompt through its own prefill

    @torch.no_grad()
    def prefill(self, inputs: dict[str, Any], row: int = 0) -> int:
        encoded: XComposerInputs = inputs["xcomposer"]
        embeds, mask = prompt_embeds(self.xcomposer, encoded)
        length = embeds.shape[1]
        if length >= self.max_len:
            raise ValueError(f"the prompt ({length} tokens) does not fit the {self.max_len}-token cache")
        with self.xcomposer.image_positions.armed(mask):
            out = self.xcomposer.decoder.model(inputs_embeds=embeds, use_cache=True)
        cache: Any = getattr(out, "cache", None) or out.past_key_values
        for number, layer in enumerate(cache.layers):
            self.k_cache[number][row : row + 1, :, :length].copy_(layer.keys)
            self.v_cache[number][row : row + 1, :, :length].copy_(layer.values)
        self._mark_prompt_seen(row, inputs["input_ids"][0])
        self._prefill_hidden = out.last_hidden_state[:, -1:].to(self.device)
        return length

    def answer(self, encoded: XComposerInputs, max_new_tokens: int, repetition_penalty: float, stop_ids: set[int],
               streamer: BaseStreamer | None = None, should_stop: Callable[[], bool] | None = None) -> list[int]:
        """The new token ids for one encoded prompt (greedy; streamed; on the decoder's own thread)."""
        prompt = encoded.penalised_ids()
        request: dict[str, Any] = {"input_ids": prompt, "xcomposer": encoded}
        output = self.generate(request, max_new_tokens, repetition_penalty, stop_ids, streamer=streamer,
                               should_stop=should_stop)
        return [int(i) for i in output[0, prompt.shape[1]:].tolist()]
