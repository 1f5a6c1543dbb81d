"""The fast path on a Qwen2.5-VL-shaped decoder (M-RoPE, biased QKV: core/models/mrope.py) on a real GPU, compiled
with CUDA graphs as the dashboard runs it (split-KV attention, Loupe's GEMVs): float32 greedy ids identical to
generate(), one answer alone and three at once through the batcher. Skipped without CUDA (CI)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from core.models.decode_gemv import PRODUCT_GEMV
from tests.qwen_vl_models import qwen_vl, qwen_vl_prompts

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

NEW = 128
TEXT = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=6, num_attention_heads=8,
            num_key_value_heads=2, vocab_size=8000, max_position_embeddings=4096)  # head_dim 128


def _loaded() -> tuple[torch.nn.Module, list[dict], list[torch.Tensor]]:
    model = qwen_vl("qwen2_5_vl", TEXT, sections=(16, 24, 24), patch=14).cuda()
    prompts = [{k: v.cuda() for k, v in p.items()} for p in qwen_vl_prompts(patch=14, words=8)]
    with torch.no_grad():
        references = [model.generate(**p, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                     repetition_penalty=1.005) for p in prompts]
    return model, prompts, references


def test_compiled_mrope_answers_as_generate_alone_and_together() -> None:
    from torch._dynamo.utils import counters

    from core.models.fast_decode import FastDecoder
    from core.models.fast_decode_batcher import ContinuousBatcher

    model, prompts, references = _loaded()
    with contextlib.closing(FastDecoder(model, 1024, rows=4)) as fast:
        assert fast.mrope and fast.gemv == PRODUCT_GEMV and fast.layers[0][2] is not None
        fast.warm_up()
        compiled = counters["stats"]["unique_graphs"]
        for prompt, reference in zip(prompts, references):  # one row alone: the one-row step
            assert torch.equal(fast.generate(dict(prompt), NEW, 1.005, set()), reference)
        batcher = ContinuousBatcher(fast)
        handles = [batcher.submit(prompt, NEW, 1.005, set()) for prompt in prompts]
        for handle, reference in zip(handles, references):
            assert torch.equal(batcher.wait(handle), reference)
        assert batcher.most_rows_at_once == 3
        assert sorted(fast.rope_delta.tolist()[:3]) == sorted([-4, -3, 0])
        assert counters["stats"]["unique_graphs"] == compiled
