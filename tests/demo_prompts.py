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


def demo_prompts(model_dir, questions: tuple[str, ...], new_tokens: int, *, fixed_length: bool) -> DemoPrompts:
    """`fixed_length`: generate() never stops early (min_new_tokens = new_tokens), as when no eos is given."""
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    prompts, references = [], []
    for number, question in enumerate(questions):
        text = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True, tokenize=False,
        )
        image = Image.new("RGB", (120, 90), COLOURS[number % len(COLOURS)])
        inputs = dict(processor(images=[image], text=text, return_tensors="pt"))
        with torch.no_grad():
            references.append(model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False,
                                             repetition_penalty=1.005,
                                             **({"min_new_tokens": new_tokens} if fixed_length else {})))
        prompts.append(inputs)
    return DemoPrompts(model, processor, prompts, references)
