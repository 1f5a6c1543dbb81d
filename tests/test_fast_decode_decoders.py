"""The fast path on every decoder family the product names, each against the model's own generate() (float32,
CPU: token for token identical): Qwen2 (biased QKV) and Mistral under a LLaVA vision tower, and Qwen2-VL /
Qwen2.5-VL, whose decoders rotate by 3-D positions (M-RoPE: core/models/mrope.py). The tiny models are built
here from configs with seeded random weights; no weight is downloaded."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
    Qwen2_5_VLConfig,
    Qwen2Config,
)

from core.models.decode_attention import DecodeAttention
from core.models.fast_decode import FastDecoder
from core.models.fast_decode_rows import generate_rows
from core.models.fast_decode_support import attention_window, cache_tokens, check, uses_mrope
from tests.qwen_vl_models import IMAGE, TINY_TEXT, qwen_vl, qwen_vl_prompts

NEW = 40
PENALTY = 1.005


def _llava(text: Any) -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=56, patch_size=14)
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE,
                                                     image_seq_length=16)).eval()


def _llava_prompts() -> list[dict[str, torch.Tensor]]:
    prompts = []
    for number, words in enumerate(([5, 6, 7], [9, 10, 11, 12, 13, 14], [20])):
        ids = torch.tensor([[1, 2, *[IMAGE] * 16, *words]])
        torch.manual_seed(number)
        prompts.append(dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(1, 3, 56, 56)))
    return prompts


FAMILIES = {
    "qwen2": lambda: (_llava(Qwen2Config(**TINY_TEXT)), _llava_prompts()),
    "mistral": lambda: (_llava(MistralConfig(**TINY_TEXT, sliding_window=None)), _llava_prompts()),
    "qwen2_5_vl": lambda: (qwen_vl("qwen2_5_vl"), qwen_vl_prompts()),
    "qwen2_vl": lambda: (qwen_vl("qwen2_vl"), qwen_vl_prompts()),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request) -> tuple[str, Any, list[dict[str, torch.Tensor]], list[list[int]]]:
    model, prompts = FAMILIES[request.param]()
    references = []
    for prompt in prompts:
        out = model.generate(**prompt, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                             repetition_penalty=PENALTY)
        references.append(out[0, prompt["input_ids"].shape[1]:].tolist())
    return request.param, model, prompts, references


def test_each_family_takes_the_fast_path_and_answers_as_generate(family) -> None:
    name, model, prompts, references = family
    status = check(model)
    assert status.enabled, status.reason
    fast = FastDecoder(model, 512, compile=False)
    assert fast.mrope == name.endswith("_vl")
    if name == "qwen2":
        assert fast.layers[0][2] is not None  # the biased QKV, fused with its bias
    for prompt, reference in zip(prompts, references):
        out = fast.generate(prompt, NEW, PENALTY, set())
        assert out[0, prompt["input_ids"].shape[1]:].tolist() == reference


@pytest.mark.parametrize("kind", list(DecodeAttention))
def test_rows_of_every_family_answer_as_each_prompt_alone(family, kind) -> None:
    """Three prompts decoded together (for M-RoPE: each row at its own delta, one of them 0)."""
    name, model, prompts, references = family
    fast = FastDecoder(model, 512, compile=False, rows=4, attention=kind)
    answers = generate_rows(fast, prompts, NEW, PENALTY, set())
    assert [list(a.new_ids) for a in answers] == references
    if fast.mrope:
        deltas = fast.rope_delta.tolist()
        assert deltas[0] < 0 and deltas[1] < 0 and deltas[0] != deltas[1] and deltas[2] == 0


def test_two_stages_keep_each_rows_delta(family) -> None:
    """The step cut into two stages (decode_stages.py, as over two GPUs) on one CPU: each stage's own copy of the
    rows' M-RoPE deltas is written at prefill."""
    _name, model, prompts, references = family
    fast = FastDecoder(model, 512, compile=False, rows=4, stage_cuts=(2,))
    assert fast.staged is not None and len(fast.staged.stages) == 2
    answers = generate_rows(fast, prompts, NEW, PENALTY, set())
    assert [list(a.new_ids) for a in answers] == references


def test_ignoring_the_3d_positions_would_change_the_answer() -> None:
    """The M-RoPE handling is load-bearing on these tiny models: decoding the image prompt with its delta
    forced to 0 (as a plain Qwen2 decoder would) gives other logits than generate()'s."""
    model = qwen_vl("qwen2_5_vl")
    prompt = qwen_vl_prompts()[0]
    fast = FastDecoder(model, 512, compile=False)
    with torch.no_grad():
        length = fast.prefill(prompt)
        token, pos = prompt["input_ids"][:, -1], fast.positions[length : length + 1]
        right = fast.logits_at(token, pos)
        assert int(fast.rope_delta[0]) == -4  # 8 image tokens on a 2 x 4 merged grid take 4 positions
        fast.rope_delta[0] = 0
        wrong = fast.logits_at(token, pos)
    assert float((right - wrong).norm() / right.norm()) > 1e-3


def test_sliding_windows_cap_the_cache_where_they_would_cut() -> None:
    mistral = MistralConfig(**TINY_TEXT, sliding_window=300)
    assert attention_window(mistral) == 300
    assert cache_tokens(mistral, 4096) == (256, "; cache capped at the model's 300-token sliding window "
                                                "(longer questions use generate())")
    assert cache_tokens(MistralConfig(**TINY_TEXT, sliding_window=4096), 4096) == (2048, "")  # within the positions
    assert attention_window(MistralConfig(**TINY_TEXT, sliding_window=None)) is None
    assert attention_window(Qwen2Config(**TINY_TEXT)) is None  # Qwen2 declares a window but uses none
    sliding_qwen = Qwen2Config(**TINY_TEXT, use_sliding_window=True, sliding_window=128, max_window_layers=1)
    assert attention_window(sliding_qwen) == 128 and cache_tokens(sliding_qwen, 4096)[0] == 128
    assert uses_mrope(Qwen2_5_VLConfig().text_config) and not uses_mrope(Qwen2Config(**TINY_TEXT))
