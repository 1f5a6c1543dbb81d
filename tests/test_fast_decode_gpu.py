"""The fast path on a real GPU: compiled bf16 decode logits as close to an fp32 truth as generate()'s, and in
float32 its greedy ids are identical to generate(). Skipped without CUDA (CI); run on the device machine."""
from __future__ import annotations

import contextlib

import pytest
import torch

from core.models.decode_gemv import PRODUCT_GEMV

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


def test_compiled_bf16_fast_path_is_as_close_to_fp32_as_generate() -> None:
    """The performance issue's criterion for bf16: the compiled fast path is no further from an fp32 truth
    than generate() is. (A fixed 1% bound against generate() measured rounding, not bugs: on this model
    generate() itself is about that far from the truth; core/models/fast_decode_accuracy.py says why.)"""
    from core.models.fast_decode import FastDecoder
    from core.models.fast_decode_accuracy import teacher_forced

    truth, model, inputs = _model(torch.float32), _model(torch.bfloat16), _inputs(torch.bfloat16)
    # Closed however the test ends: a decoder dropped with its thread and graphs alive is collected at a random
    # later point (one GPU run crashed at pytest's exit, after every test had passed).
    with contextlib.closing(FastDecoder(model, 1024)) as fast:
        assert fast.gemv == PRODUCT_GEMV  # the product's step: the split-KV kernel and Loupe's GEMVs (row_gemv.py)
        step = torch.compile(fast.logits_at, mode="reduce-overhead", dynamic=False)

        def replayed(token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
            torch.compiler.cudagraph_mark_step_begin()  # each replay's output is read before the next
            return step(token.clone(), pos.clone()).clone()

        fast.logits_at = replayed  # type: ignore[method-assign]  # teacher_forced() drives the compiled step
        with torch.no_grad():
            result = teacher_forced(model, fast, inputs, NEW, truth=truth)
        print(f"bf16 over {NEW} teacher-forced steps: {result}")
        assert result["fast_vs_fp32_max_rel_diff"] <= 1.1 * result["generate_vs_fp32_max_rel_diff"], result
        assert result["fast_vs_fp32_mean_rel_diff"] <= 1.1 * result["generate_vs_fp32_mean_rel_diff"], result


def _reference(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                              repetition_penalty=1.005)


@pytest.mark.parametrize("attention", ["sdpa", "flex", "split", "split+fused", "split+stages"])
def test_float32_greedy_ids_identical_to_generate(attention: str) -> None:
    """"split+fused": the norms, residual adds and SiLU·mul folded into the GEMVs (fused_gemv.py, off by default).
    "split+stages": the step cut into two stages, each compiled with its own CUDA graphs, as a decoder split over
    two GPUs runs (decode_stages.py), here on one GPU."""
    from core.models.decode_attention import DecodeAttention
    from core.models.fast_decode import FastDecoder

    attention, _, extra = attention.partition("+")
    model, inputs = _model(torch.float32), _inputs(torch.float32)
    reference = _reference(model, inputs)
    # compiled with CUDA graphs, as in the dashboard; each step launched before the last token is read
    with contextlib.closing(FastDecoder(model, 1024, attention=DecodeAttention(attention), fused=(extra == "fused") or None,
                                            stage_cuts=(4,) if extra == "stages" else ())) as fast:
        assert fast.read_ahead and fast.fused == (extra == "fused") and (fast.staged is not None) == (extra == "stages")
        assert fast.gemv == (PRODUCT_GEMV if attention == "split" else {})  # Loupe's GEMVs come with its attention
        fast.warm_up()
        out = fast.generate(dict(inputs), NEW, 1.005, set())
        assert torch.equal(out, reference)


@pytest.mark.parametrize("attention", ["flex", "split", "split+rows_gemv"])
def test_continuous_batching_on_the_gpu_answers_as_each_alone(attention: str) -> None:
    """Three float32 answers at once through the compiled 4-row step, one joining mid-answer: each token for
    token generate()'s, and no answer compiles anything (every step shape was compiled while warming up).
    "split+rows_gemv": the rows' step's projections through Loupe's rows kernel (rows_gemv.py, not yet the
    product's choice)."""
    from torch._dynamo.utils import counters

    from core.models.decode_attention import DecodeAttention
    from core.models.fast_decode import FastDecoder
    from core.models.fast_decode_batcher import ContinuousBatcher

    model = _model(torch.float32)
    prompts = [_inputs(torch.float32) for _ in range(3)]
    prompts[1]["input_ids"] = prompts[1]["input_ids"][:, :72].clone()  # another length
    prompts[1]["attention_mask"] = prompts[1]["attention_mask"][:, :72].clone()
    prompts[2]["pixel_values"] = prompts[2]["pixel_values"].flip(-1).contiguous()  # another image
    references = [_reference(model, p) for p in prompts]
    from core.models.decode_gemv import GemvKernel, Projection

    kind, _, rows_kernel = attention.partition("+")
    rows_gemv = dict.fromkeys(Projection, GemvKernel.TRITON) if rows_kernel else None
    with contextlib.closing(FastDecoder(model, 1024, rows=4, attention=DecodeAttention(kind), rows_gemv=rows_gemv)) as fast:
        fast.warm_up()
        compiled = counters["stats"]["unique_graphs"]
        batcher = ContinuousBatcher(fast)
        late: list = []

        def join_later() -> bool:
            if len(first.produced) == 20 and not late:
                late.append(batcher.submit(prompts[2], NEW, 1.005, set()))
            return False

        first = batcher.submit(prompts[0], NEW, 1.005, set(), should_stop=join_later)
        second = batcher.submit(prompts[1], NEW, 1.005, set())
        assert torch.equal(batcher.wait(first), references[0])
        assert torch.equal(batcher.wait(second), references[1])
        assert torch.equal(batcher.wait(late[0]), references[2])
        assert batcher.joined_running >= 1 and batcher.most_rows_at_once == 3
        assert counters["stats"]["unique_graphs"] == compiled
