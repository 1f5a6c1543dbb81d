"""The fast path on a real GPU: compiled decode logits agree with the model within bf16 tolerance, and in
float32 its greedy ids are identical to generate(). Skipped without CUDA (CI); run on the device machine."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

NEW = 256


def _model(dtype: torch.dtype):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=112, patch_size=14),
        text_config=LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                                num_key_value_heads=4, vocab_size=8000, max_position_embeddings=4096),
        image_token_index=5, vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        return LlavaForConditionalGeneration(config).to(dtype).eval()


def _inputs(dtype: torch.dtype) -> dict:
    ids = torch.randint(10, 8000, (1, 80), generator=torch.Generator().manual_seed(1))
    ids[0, 4:68] = 5  # 64 image tokens (112 / 14 = 8 → 8×8)
    return {"input_ids": ids.cuda(), "attention_mask": torch.ones_like(ids).cuda(),
            "pixel_values": torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(2)).cuda().to(dtype)}


def test_compiled_teacher_forced_logits_within_bf16_tolerance() -> None:
    from core.models.fast_decode import FastDecoder

    model, inputs = _model(torch.bfloat16), _inputs(torch.bfloat16)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
        ids, ref_logits = out.sequences, out.logits  # generate()'s own logits at each greedy step
        fast = FastDecoder(model, 1024)
        step = torch.compile(fast.logits_at, mode="reduce-overhead", dynamic=False)
        length = fast.prefill(dict(inputs))
        worst = float((fast.model.lm_head(fast._prefill_hidden[:, -1]).float()[0] - ref_logits[0][0].float()).norm()
                      / ref_logits[0][0].float().norm())
        pos_buf = torch.zeros(1, dtype=torch.long, device="cuda")
        for k in range(1, NEW):
            pos_buf.fill_(length + k - 1)
            torch.compiler.cudagraph_mark_step_begin()
            got = step(ids[:, length + k - 1].clone(), pos_buf).clone()
            ref = ref_logits[k][0].float()
            worst = max(worst, float((got - ref).norm() / ref.norm()))
    print(f"teacher-forced max relative difference over {NEW} steps: {worst:.2e}")
    assert worst <= 1e-2


def test_float32_greedy_ids_identical_to_generate() -> None:
    from core.models.fast_decode import FastDecoder

    model, inputs = _model(torch.float32), _inputs(torch.float32)
    with torch.no_grad():
        reference = model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                   repetition_penalty=1.005)
    fast = FastDecoder(model, 1024)  # compiled with CUDA graphs, as in the dashboard
    fast.warm_up()
    out = fast.generate(dict(inputs), NEW, 1.005, set())
    assert torch.equal(out, reference)
