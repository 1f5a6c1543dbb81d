"""Prompts for the real demo model, one per question (each with its own solid-colour image), and generate()'s
greedy answer to each: what the fast path's rows and continuous batching are checked against."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

COLOURS = ("orange", "navy", "white")


@dataclass
class DemoPrompts:
    model: Any
    processor: Any
    prompts: list[dict[str, Any]]
    references: list[torch.Tensor]  # prompt + generate()'s greedy new ids, per prompt


def image_prompt(processor: Any, question: str, colour: str, text_first: bool = False) -> dict[str, Any]:
    """The inputs of one question about a solid-colour image (the image before the text, or after it)."""
    content = [{"type": "image"}, {"type": "text", "text": question}]
    text = processor.apply_chat_template([{"role": "user", "content": content[::-1] if text_first else content}],
                                         add_generation_prompt=True, tokenize=False)
    return dict(processor(images=[Image.new("RGB", (120, 90), colour)], text=text, return_tensors="pt"))


def greedy_reference(model: Any, inputs: dict[str, Any], new_tokens: int, fixed_length: bool = True) -> torch.Tensor:
    """generate()'s greedy answer (prompt + new ids) with the tests' repetition penalty."""
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, repetition_penalty=1.005,
                              **({"min_new_tokens": new_tokens} if fixed_length else {}))


def demo_prompts(model_dir, questions: tuple[str, ...], new_tokens: int, *, fixed_length: bool) -> DemoPrompts:
    """`fixed_length`: generate() never stops early (min_new_tokens = new_tokens), as when no eos is given."""
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    prompts, references = [], []
    for number, question in enumerate(questions):
        inputs = image_prompt(processor, question, COLOURS[number % len(COLOURS)])
        references.append(greedy_reference(model, inputs, new_tokens, fixed_length))
        prompts.append(inputs)
    return DemoPrompts(model, processor, prompts, references)
