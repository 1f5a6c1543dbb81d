"""The fast path in bf16 on a deep (32-layer) random Llama-shaped VLM, on the CPU: it must be no further from
the fp32 truth than generate() is, and the check must catch a real bug (a rotary table off by one position)."""
from __future__ import annotations

import pytest
import torch

from core.models.fast_decode import FastDecoder
from core.models.fast_decode_accuracy import teacher_forced

NEW = 12


def _config():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=56, patch_size=14),
        text_config=LlamaConfig(hidden_size=256, intermediate_size=704, num_hidden_layers=32, num_attention_heads=8,
                                num_key_value_heads=2, vocab_size=4000, max_position_embeddings=1024),
        image_token_index=5, vision_feature_select_strategy="default", vision_feature_layer=-1,
    )


@pytest.fixture(scope="module")
def models():
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(0)
    truth = LlavaForConditionalGeneration(_config()).eval()  # float32
    bf16 = LlavaForConditionalGeneration(_config()).eval()
    bf16.load_state_dict(truth.state_dict())
    ids = torch.randint(10, 4000, (1, 40), generator=torch.Generator().manual_seed(1))
    ids[0, 4:20] = 5  # 16 image tokens (56 / 14 = 4 → 4×4)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "pixel_values": torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(2)).bfloat16()}
    return bf16.to(torch.bfloat16), truth, inputs


def test_bf16_fast_path_is_as_close_to_fp32_as_generate(models) -> None:
    model, truth, inputs = models
    result = teacher_forced(model, FastDecoder(model, 128, compile=False), inputs, NEW, truth=truth)
    assert result["within_noise_floor"], result
    assert result["fast_vs_fp32_max_rel_diff"] <= 1.1 * result["generate_vs_fp32_max_rel_diff"], result
    # bf16 really does round: the two HF paths are not bit-identical (else the floor would prove nothing).
    assert result["hf_paths_max_rel_diff"] > 1e-4, result


def test_the_check_catches_a_position_bug(models) -> None:
    model, truth, inputs = models
    fast = FastDecoder(model, 128, compile=False)
    fast.cos, fast.sin = fast.cos.roll(1, dims=0), fast.sin.roll(1, dims=0)  # every position rotated as the one before
    result = teacher_forced(model, fast, inputs, NEW, truth=truth)
    # Random weights attend almost uniformly, so even this bug only doubles the distance from the truth:
    # that is why the noise margin is 1.25 and not larger.
    assert not result["within_noise_floor"], result
    assert result["fast_vs_fp32_max_rel_diff"] > 1.4 * result["generate_vs_fp32_max_rel_diff"], result
