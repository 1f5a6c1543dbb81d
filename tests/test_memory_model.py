"""One memory model: the plan's reserve and admission's estimate are the same numbers for the same workload.

What compares, per device: the plan's reserve less its CUDA context (GpuShare.kv_cache_bytes and
.activation_bytes) equals admission's need before its margin (MemoryEstimate.device_needs: KV cache and the
largest transient), and admission's figure is exactly that need × 1.2 + 64 MiB. A loaded model has already
spent its CUDA context, which is why admission leaves it out and the plan counts it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from core.backends.base import EncodedQuery
from core.models import memory_model, model_shape, planner
from core.models.memory_model import Attention, DeviceNeed, Geometry, Workload
from core.records import GenerationSettings, PreparedImage, Query
from core.serving import admission
from tests.model_configs import INTERNLM2_7B, llava_7b_folder, xcomposer_folder

GB = 10**9


def _query(images: int, question: str, max_new_tokens: int) -> Query:
    image = PreparedImage(Image.new("RGB", (640, 480)), (), "PNG", (640, 480), "", 0.0)
    return Query((image,) * images, question, GenerationSettings(max_new_tokens=max_new_tokens))


def _assert_plan_equals_admission(plan, est: admission.MemoryEstimate) -> None:
    assert set(est.device_needs) == {f"cuda:{g.index}" for g in plan.gpus}
    for g in plan.gpus:
        need = est.device_needs[f"cuda:{g.index}"]
        assert need == DeviceNeed(kv_cache_bytes=g.kv_cache_bytes, transient_bytes=g.activation_bytes)
        before_margin = need.kv_cache_bytes + need.transient_bytes
        assert g.reserve_bytes == before_margin + memory_model.CUDA_CONTEXT_BYTES
        assert est.need_bytes[f"cuda:{g.index}"] == int(before_margin * 1.2 + 64 * 2**20)


def test_the_plans_reserve_equals_admissions_estimate_for_a_loaded_sharded_model(tmp_path: Path) -> None:
    """LLaVA-7B-shaped, planned over two 10 GB cards, then 'loaded' with that device map (on the meta device):
    admission reads geometry, placement and image tokens from the model and gets the plan's numbers."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForImageTextToText

    folder = llava_7b_folder(tmp_path)
    shape = model_shape.load_shape(folder, dtype="bfloat16", max_images=4)
    plan = planner.plan(shape, [(0, 10 * GB), (1, 10 * GB)], planner.largest_workload(shape, 1024, 200))
    assert plan.fits and len(plan.gpus) == 2
    with init_empty_weights():
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(folder)).to(torch.bfloat16)
    model.hf_device_map = dict(plan.device_map)
    spec = admission.spec_from_model(model)
    assert spec.geometry == shape.geometry  # the loaded model's config is read by the planner's reader
    assert spec.vision_device == "cuda:0" and spec.head_device == "cuda:1"
    assert spec.layers_by_device == {f"cuda:{g.index}": g.layers[1] - g.layers[0] + 1 for g in plan.gpus}

    # The largest question the plan holds (4 images, 200 characters at one token each, 1024 new tokens)
    # counted by admission from a real query is the plan's workload, token for token.
    workload = admission.workload_from_query(_query(4, "字" * 200, 1024), spec, text_tokens=200)
    assert workload == planner.largest_workload(shape, 1024, 200)
    assert (workload.context_tokens, workload.image_tokens) == (plan.context_tokens, plan.image_tokens)
    _assert_plan_equals_admission(plan, admission.estimate_workload(workload, spec))


def test_the_documented_xcomposer_plan_is_admissions_estimate_plus_the_cuda_context(tmp_path: Path) -> None:
    """XComposer2.5 on two 22.2 GB cards: GPU0 12.9 GB (the vision tower's transient), GPU1 11.7 GB. The remote
    code's full-prompt logits (6.7 GB on GPU1, 16.9 GB in all there) are gone: Loupe's own implementation keeps
    the last position's only."""
    shape = model_shape.load_shape(xcomposer_folder(tmp_path))
    workload = planner.largest_workload(shape, 1024, 200)
    plan = planner.plan(shape, [(0, int(22.2 * GB)), (1, int(22.2 * GB))], workload)
    assert [round(g.predicted_bytes / GB, 1) for g in plan.gpus] == [12.9, 11.7]
    config = {"model_type": "internlmxcomposer2", **INTERNLM2_7B}
    spec = admission.ModelMemorySpec(
        geometry=model_shape.xcomposer_geometry(config, 2), layers=32,
        layers_by_device={f"cuda:{g.index}": g.layers[1] - g.layers[0] + 1 for g in plan.gpus},
        vision_device="cuda:0", head_device="cuda:1", image_tokens=0, image_tokens_several=0,
        vision_tokens=0, vision_tokens_several=0, patch_pixels=0)
    assert spec.geometry == shape.geometry
    est = admission.estimate_workload(workload, spec)
    _assert_plan_equals_admission(plan, est)
    logits = memory_model.logits_bytes(shape.geometry, workload)
    assert logits == 92544 * (2 + 4)  # one position, bf16 and its fp32 copy
    # GPU1's largest transient is now a decoder layer's prefill, not the logits.
    assert est.device_needs["cuda:1"].transient_bytes == memory_model.layer_prefill_bytes(shape.geometry, workload)


def test_admission_reads_a_loaded_model_as_the_planner_reads_its_folder(engine, demo_model_dir: Path) -> None:
    model = engine.backend.model
    dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[model.dtype]
    spec = admission.spec_from_model(model)
    assert spec.geometry == model_shape.load_shape(demo_model_dir, dtype=dtype).geometry
    assert spec.layers == sum(spec.layers_by_device.values()) == model_shape.load_shape(demo_model_dir).num_layers


def test_the_formulas_that_had_drifted() -> None:
    g = Geometry(hidden=4096, intermediate=14336, heads=32, kv_heads=8, head_dim=128, vocab=92544, dtype_bytes=2)
    w = Workload(prompt_tokens=1000, image_tokens=0, max_new_tokens=24)
    # SwiGLU holds act(gate), up and their product at once: 3 intermediate widths, not 2.
    assert memory_model.layer_prefill_bytes(g, w) == 1000 * (4 * 4096 + 3 * 14336) * 2
    # Eager attention: bf16 scores, their fp32 softmax and its bf16 copy, per head and prompt position pair.
    eager = Workload(prompt_tokens=1000, image_tokens=0, max_new_tokens=24, attention=Attention.EAGER)
    assert memory_model.layer_prefill_bytes(g, eager) - memory_model.layer_prefill_bytes(g, w) == 32 * 1000**2 * 8
    # generate() keeps the logits of one position (then its fp32 copy), and so does Loupe's XComposer2.5.
    assert memory_model.logits_bytes(g, w) == 92544 * (2 + 4)
    # Transients follow one another: a device holding layers, the tower and the head counts the largest.
    vision = Geometry(**{**g.__dict__, "vision_hidden": 1024, "vision_intermediate": 4096, "vision_layers": 24})
    seen = Workload(prompt_tokens=1000, image_tokens=0, max_new_tokens=24, vision_tokens=5000)
    need = memory_model.device_need(vision, seen, layers=2, vision=True, head=True)
    assert need.transient_bytes == max(memory_model.layer_prefill_bytes(vision, seen),
                                       memory_model.vision_tower_bytes(vision, seen), memory_model.logits_bytes(vision, seen))
    assert need.transient_bytes == memory_model.vision_tower_bytes(vision, seen) > memory_model.layer_prefill_bytes(vision, seen)
    assert need.kv_cache_bytes == memory_model.kv_cache_bytes(2, 8, 128, 1024, 1, 2)


@pytest.mark.parametrize("exact", [False, True])
def test_exact_prompt_tokens_from_the_encoded_question_replace_the_count(engine, exact: bool) -> None:
    adm = admission.for_backend(engine.backend)
    assert adm is not None
    query = _query(1, "What is in the image?", 16)
    if exact:  # the backend's one encoding: its counts are the workload's
        encoded = engine.backend.encode(query)
        assert encoded.prompt_tokens is not None and encoded.image_tokens == 16
    else:  # an encoding without counts (XComposer's): the question is tokenized here, the rest by the rules
        encoded = EncodedQuery(query, None, None, None, 0.0)
    workload = adm.estimate(encoded).workload
    if exact:
        assert (workload.prompt_tokens, workload.image_tokens) == (encoded.prompt_tokens, encoded.image_tokens)
    else:
        question = len(engine.backend.processor.tokenizer(query.question, add_special_tokens=False)["input_ids"])
        assert workload.prompt_tokens == question + memory_model.TEMPLATE_TOKENS + workload.image_tokens
    assert adm.check(encoded).workload == workload
