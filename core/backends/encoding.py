"""Encoding queries for a transformers VLM, once: chat template, processor, exact token counts.

The processor's tensors stay on the CPU until generation takes them (`to_device`), so questions waiting in
the queue hold no GPU memory. Image tokens are counted from the placeholder id the model's config names
(`image_token_id` / `image_token_index`): the processor has already expanded each image to its tokens.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.backends.base import EncodedQuery
from core.records import Query

if TYPE_CHECKING:
    from transformers import BatchFeature, PreTrainedModel, ProcessorMixin


def chat_prompt(processor: ProcessorMixin, query: Query) -> str:
    """The query as the model's chat template writes it: earlier turns as user and assistant messages (text
    only: a Turn carries no image), then one image slot per image and the question in the last user turn,
    the one the images came with."""
    conversation: list[dict[str, object]] = []
    for turn in query.history:
        conversation.append({"role": "user", "content": [{"type": "text", "text": turn.question}]})
        conversation.append({"role": "assistant", "content": [{"type": "text", "text": turn.answer}]})
    content: list[dict[str, str]] = [{"type": "image"} for _ in query.images]
    content.append({"type": "text", "text": query.question})
    conversation.append({"role": "user", "content": content})
    # transformers annotates a message's content as str only; its docs and templates take a list of parts too
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)  # type: ignore[arg-type]


def image_token_id(model: PreTrainedModel) -> int | None:
    config = model.config
    found = getattr(config, "image_token_id", None)
    return found if found is not None else getattr(config, "image_token_index", None)


def encode_rows(processor: ProcessorMixin, model: PreTrainedModel,
                queries: Sequence[Query]) -> tuple[BatchFeature, list[int], list[int | None]]:
    """One processor call for all queries (left-padded when several); per row its prompt and image token counts."""
    images = [p.image for q in queries for p in q.images] or None
    prompts = [chat_prompt(processor, q) for q in queries]
    if len(queries) == 1:
        inputs = processor(images=images, text=prompts[0], return_tensors="pt")
    else:  # left padding: every row's last prompt token in the same column (see batched.py)
        inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True, padding_side="left")
    prompt_tokens = [int(n) for n in inputs["attention_mask"].sum(dim=1).tolist()]
    placeholder = image_token_id(model)
    image_tokens: list[int | None] = [None] * len(queries)
    if placeholder is not None:
        image_tokens = [int(n) for n in (inputs["input_ids"] == placeholder).sum(dim=1).tolist()]
    return inputs, prompt_tokens, image_tokens


def encode_query(processor: ProcessorMixin, model: PreTrainedModel, query: Query) -> EncodedQuery:
    started = time.perf_counter()
    inputs, prompt_tokens, image_tokens = encode_rows(processor, model, [query])
    return EncodedQuery(query, inputs, prompt_tokens[0], image_tokens[0], time.perf_counter() - started)


def to_device(inputs: BatchFeature, model: PreTrainedModel) -> dict[str, Any]:
    """The inputs where the model's embeddings are, images in the model's dtype: a new dict, because a
    BatchFeature's own .to() moves it in place and the encoding must stay as it was (on the CPU)."""
    device = model.get_input_embeddings().weight.device
    moved = {key: value.to(device) if hasattr(value, "to") else value for key, value in inputs.items()}
    if "pixel_values" in moved and moved["pixel_values"].is_floating_point():
        moved["pixel_values"] = moved["pixel_values"].to(model.dtype)
    return moved
