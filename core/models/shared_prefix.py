"""Prompts that begin alike: a later one copies an earlier one's cached prefix and computes only the rest.

Why: Compare asks 4 templates about one image, and analysts ask several questions about one image at once;
their prompts agree up to the question (the chat template's opening and the image's ~600 tokens). A full
prefill of each costs 30-50 ms on a 7B model on an H200, vision tower included, while every decoding row
waits; copying the prefix's K/V from the row that holds it costs a fraction of a millisecond, and the
question's few tokens cost about one read of the weights (4-5 ms). The copy itself is done in the prefill's
pass, layer by layer (packed_prefill.py); this module decides what is shared.
When (`shared_length`): every input other than the token ids is equal (the same images, the same pixels);
the ids agree on a prefix of at least MIN_SHARED tokens; what follows holds no image or video placeholder
(its embeddings are the text's own, looked up directly, with no vision tower); and at least one token is
left to compute (its hidden state gives the first new token). The row copied from must still hold its
prompt: a row holding a request, whose decode writes only positions after its prompt.
Exactness: a prefix's K/V depend on the prefix alone (causal attention), so the answer is the one the prompt
gets alone; matrix products over another number of tokens may round differently in the last bit.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from core.models.fast_decode import FastDecoder

MIN_SHARED = 16  # below this a full prefill costs about the same
TEXT_KEYS = frozenset({"input_ids", "attention_mask"})
MEDIA_TOKEN_KEYS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index")


def media_token_ids(config: Any) -> frozenset[int]:
    """The placeholder ids a VLM's config names for images and videos (empty: unknown, nothing is shared)."""
    found = {getattr(config, key, None) for key in MEDIA_TOKEN_KEYS}
    return frozenset(int(i) for i in found if isinstance(i, int) and i >= 0)


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b.to(a.device)))
    return a == b


def shared_length(inputs: Mapping[str, Any], earlier: Mapping[str, Any], media_ids: frozenset[int]) -> int:
    """How many leading positions `inputs` can copy from the cache of `earlier`'s prompt (0: none)."""
    if not media_ids or set(inputs) != set(earlier):
        return 0
    if not all(_same(inputs[key], earlier[key]) for key in inputs if key not in TEXT_KEYS):
        return 0
    ids, other = inputs["input_ids"][0], earlier["input_ids"][0].to(inputs["input_ids"].device)
    n = min(ids.shape[0], other.shape[0])
    differ = (ids[:n] != other[:n]).nonzero()
    shared = min(int(differ[0]) if differ.numel() else n, ids.shape[0] - 1)
    rest = ids[shared:]
    if shared < MIN_SHARED or any(bool((rest == m).any()) for m in media_ids):
        return 0
    return shared


def best_source(fast: FastDecoder, inputs: Mapping[str, Any],
                holders: Iterable[tuple[int, Mapping[str, Any]]]) -> tuple[int, int] | None:
    """(row, shared length) of the row whose prompt shares the longest prefix with `inputs`, or None."""
    if not fast.shares_prefixes:
        return None
    best = max(((row, shared_length(inputs, held, fast.media_ids)) for row, held in holders),
               key=lambda pair: pair[1], default=None)
    return best if best is not None and best[1] > 0 else None
