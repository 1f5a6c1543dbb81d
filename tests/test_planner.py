"""The shard planner on configs built here (no weights): XComposer-shaped 7B, its native equivalent, the demo."""
from __future__ import annotations

from pathlib import Path

import pytest

from core import setting_rules
from core.errors import ConfigError
from core.models import model_shape, planner, xcomposer_tokens
from core.models.memory_model import Workload
from tests.model_configs import CLIP_L14_336, llava_7b_folder, tied_text_folder, xcomposer_folder

GB = 10**9
TWO_CARDS = [(0, int(22.2 * GB)), (1, int(22.2 * GB))]


def work(shape: model_shape.ModelShape) -> Workload:
    """The largest question of the default settings: 1024 new tokens, 200 characters, the model's images."""
    return planner.largest_workload(shape, 1024, 200)


def one_image(shape: model_shape.ModelShape, max_new_tokens: int, batch: int = 1) -> Workload:
    """One image of 576 LLM tokens, encoded as one crop, under a 264-token question."""
    return Workload(prompt_tokens=264 + 576, image_tokens=576, max_new_tokens=max_new_tokens, batch=batch,
                    vision_tokens=shape.vision_tokens_per_crop)


@pytest.fixture(scope="module")
def xcomposer(tmp_path_factory: pytest.TempPathFactory) -> model_shape.ModelShape:
    return model_shape.load_shape(xcomposer_folder(tmp_path_factory.mktemp("xc")))


@pytest.fixture(scope="module")
def llava7b(tmp_path_factory: pytest.TempPathFactory) -> model_shape.ModelShape:
    return model_shape.load_shape(llava_7b_folder(tmp_path_factory.mktemp("llava")))


def _covers_every_layer_once(plan, layers: int) -> None:
    ranges = [g.layers for g in plan.gpus]
    assert ranges[0][0] == 0 and ranges[-1][1] == layers - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False))
    assert sorted(k for k in plan.device_map if k.startswith(plan.layer_prefix + ".")) == sorted(
        f"{plan.layer_prefix}.{i}" for i in range(layers))


def test_xcomposer_shape_counts_its_parts_from_config(xcomposer: model_shape.ModelShape) -> None:
    names = [p.name for p in xcomposer.parts]
    assert names == ["vit", "vision_proj", "plora_glb_GN", "plora_sub_GN", "model.tok_embeddings", "model.norm", "output"]
    assert xcomposer.layer_prefix == "model.layers" and xcomposer.num_layers == 32
    # InternLM2-7B (7.7 B) + Partial-LoRA + CLIP ViT-L/14 (0.3 B) + projector: a little under 9 B parameters
    assert 8.3e9 < xcomposer.params < 8.9e9
    assert 16.5 * GB < xcomposer.weights_bytes < 17.8 * GB  # bf16
    vit = next(p for p in xcomposer.parts if p.name == "vit")
    assert 0.55 * GB < vit.nbytes < 0.65 * GB
    # 560 px crops, 2x2 merged: 400 tokens a crop + a separator per row; four images at 6 crops each
    # (11,764 tokens) outweigh one image at 24 crops (10,501)
    assert xcomposer.image_tokens == 4 * ((6 + 1) * 400 + 1 + 7 * 20)


def test_a_vision_config_overrides_the_xcomposer_default(tmp_path: Path) -> None:
    shape = model_shape.load_shape(xcomposer_folder(tmp_path, vision=CLIP_L14_336))
    assert shape.image_tokens == 4 * ((6 + 1) * 144 + 1 + 7 * 12)  # 336 px crops: 144 tokens each
    # With no full-prompt logits its predicted peak on one 22.2 GB card (19.7 GB) is within the 90% headroom:
    # offered two cards, it stays on one.
    single = planner.plan(shape, TWO_CARDS[:1], work(shape))
    assert single.fits and round(single.total_bytes / GB, 1) == 19.7 < planner.HEADROOM * 22.2
    plan = planner.plan(shape, TWO_CARDS, work(shape))
    assert len(plan.gpus) == 1 and plan.unused_gpus == (1,) and plan.total_bytes == single.total_bytes


def test_xcomposer_on_two_22gb_cards_splits_about_half_with_vision_on_gpu0(xcomposer) -> None:
    plan = planner.plan(xcomposer, TWO_CARDS, work(xcomposer))
    assert plan.fits and [g.index for g in plan.gpus] == [0, 1]
    first, second = plan.gpus
    assert {"vit", "vision_proj", "model.tok_embeddings"} <= set(first.modules)
    assert set(second.modules) == {"model.norm", "output"}
    count = [g.layers[1] - g.layers[0] + 1 for g in plan.gpus]
    assert 14 <= count[0] <= 16 <= count[1] <= 18  # about half each; GPU0 carries the vision tower
    _covers_every_layer_once(plan, 32)
    for gpu in plan.gpus:
        assert gpu.predicted_bytes <= gpu.capacity_bytes == int(22.2 * GB)
        layers = gpu.layers[1] - gpu.layers[0] + 1
        assert gpu.kv_cache_bytes == 2 * layers * 8 * 128 * plan.context_tokens * 1 * 2  # the formula, shown
        assert gpu.reserve_bytes == gpu.kv_cache_bytes + gpu.activation_bytes + gpu.context_bytes
    assert plan.context_tokens == 264 + xcomposer.image_tokens + 1024
    assert plan.total_bytes == plan.weights_bytes + plan.reserve_bytes
    assert plan.device_map["vit"] == 0 and plan.device_map["output"] == 1


def test_one_22_2_gb_card_cannot_hold_the_xcomposer_shape_one_24_gb_card_can(xcomposer) -> None:
    plan = planner.plan(xcomposer, [(0, int(22.2 * GB))], work(xcomposer))
    assert not plan.fits
    assert plan.total_bytes > 22.2 * GB and plan.weights_bytes < 22.2 * GB  # the reserve is what tips it
    # 22.6 GB in all: 17.4 GB of weights, 1.7 GB of KV cache, 3.0 GB for the vision tower's 112 crops, 0.5 GB
    # of CUDA context. With the remote code's full-prompt logits it needed 26.3 GB and no 24 GB card held it.
    card = planner.plan(xcomposer, [(0, int(24 * GB))], work(xcomposer))
    assert card.fits and round(card.total_bytes / GB, 1) == 22.6
    assert round(card.gpus[0].activation_bytes / GB, 2) == 3.03  # the vision tower, not the logits


def test_reserve_grows_with_new_tokens_and_image_tokens(xcomposer) -> None:
    small = planner.plan(xcomposer, TWO_CARDS, one_image(xcomposer, 128))
    large = planner.plan(xcomposer, TWO_CARDS, one_image(xcomposer, 4096))
    assert large.context_tokens - small.context_tokens == 4096 - 128
    kv_small = sum(g.kv_cache_bytes for g in small.gpus)
    kv_large = sum(g.kv_cache_bytes for g in large.gpus)
    assert kv_large - kv_small == 2 * 32 * 8 * 128 * (4096 - 128) * 2
    batch = planner.plan(xcomposer, TWO_CARDS, one_image(xcomposer, 128, batch=4))
    assert sum(g.kv_cache_bytes for g in batch.gpus) == 4 * kv_small


def test_native_7b_fits_one_card_and_leaves_the_second_unused(llava7b) -> None:
    assert llava7b.layer_prefix == "model.language_model.layers" and llava7b.num_layers == 32
    assert 15.5 * GB < llava7b.weights_bytes < 16.5 * GB
    plan = planner.plan(llava7b, TWO_CARDS, work(llava7b))
    assert plan.fits and [g.index for g in plan.gpus] == [0] and plan.unused_gpus == (1,)
    assert set(plan.device_map.values()) == {0}


def test_native_7b_on_small_cards_puts_vision_first_and_head_last(llava7b) -> None:
    plan = planner.plan(llava7b, [(0, 10 * GB), (1, 10 * GB)], work(llava7b))
    assert plan.fits and len(plan.gpus) == 2
    assert {"model.vision_tower", "model.multi_modal_projector", "model.language_model.embed_tokens",
            "model.language_model.rotary_emb"} <= set(plan.gpus[0].modules)
    assert set(plan.gpus[1].modules) == {"model.language_model.norm", "lm_head"}
    _covers_every_layer_once(plan, 32)


def test_a_model_that_cannot_fit_is_planned_best_effort_and_marked(llava7b) -> None:
    plan = planner.plan(llava7b, [(0, 8 * GB), (1, 8 * GB)], work(llava7b))
    assert not plan.fits and len(plan.gpus) == 2
    assert plan.total_bytes > 16 * GB


def test_the_demo_model_stays_on_one_gpu_and_its_device_map_covers_every_parameter(demo_model_dir: Path) -> None:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForImageTextToText

    shape = model_shape.load_shape(demo_model_dir)
    plan = planner.plan(shape, TWO_CARDS, work(shape))
    assert plan.fits and len(plan.gpus) == 1 and plan.unused_gpus == (1,)
    with init_empty_weights():
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(demo_model_dir))
    keys = set(plan.device_map)
    for name, _ in [*model.named_parameters(), *model.named_buffers()]:
        prefixes = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        assert prefixes & keys, f"{name} has no device in the plan"


def test_tied_lm_head_stays_with_the_embeddings(tmp_path: Path) -> None:
    shape = model_shape.load_shape(tied_text_folder(tmp_path))  # text-only: AutoModelForCausalLM fallback
    head = next(p for p in shape.parts if p.name == "lm_head")
    assert head.place == "first" and head.nbytes == 0  # shares the embedding weight: counted once, placed with it
    plan = planner.plan(shape, [(0, 10**6), (1, 10**6)], Workload(prompt_tokens=16, image_tokens=0, max_new_tokens=16))
    assert plan.device_map["lm_head"] == plan.device_map["model.embed_tokens"] == 0


def test_a_pinned_split_is_used_as_given(xcomposer) -> None:
    plan = planner.plan(xcomposer, TWO_CARDS, work(xcomposer), split="0-15,16-31")
    assert [g.layers for g in plan.gpus] == [(0, 15), (16, 31)] and plan.pinned and plan.fits


@pytest.mark.parametrize(("split", "phrase"), [
    ("0-16,16-31", "placed twice"),
    ("0-14,16-31", "layer 15 is on no GPU"),
    ("0-15,16-40", "the model has 32 layers"),
    ("0-15,16-30", "leaves layers 31-31 on no GPU"),
    ("0-15,x-31", "not a layer range"),
    ("1-31", "layer 0 is on no GPU"),
    ("0-10,11-20,21-31", "names 3 GPUs but 2 are available"),
])
def test_bad_pinned_splits_are_refused_clearly(xcomposer, split: str, phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase):
        planner.plan(xcomposer, TWO_CARDS, work(xcomposer), split=split)


@pytest.mark.parametrize("text", ["22.2,abc", "0", "-3", "22.2,,22.2"])
def test_bad_memory_caps_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="max_memory_gb"):
        setting_rules.parse_memory(text)


def test_the_published_config_is_recognised_and_plain_internlm2_is_not(tmp_path: Path) -> None:
    """The published config says model_type "internlm2" and names the XComposer class; the older
    "internlmxcomposer2" type reads the same; a plain InternLM2 chat model (same model_type) is not XComposer."""
    published = model_shape.read_config(xcomposer_folder(tmp_path / "published"))
    assert published["model_type"] == "internlm2" and model_shape.is_xcomposer(published)
    assert model_shape.is_xcomposer({**published, "model_type": "internlmxcomposer2", "architectures": []})
    assert not model_shape.is_xcomposer({**published, "architectures": ["InternLM2ForCausalLM"]})
    legacy = model_shape.load_shape(xcomposer_folder(tmp_path / "legacy", model_type="internlmxcomposer2"))
    shape = model_shape.load_shape(xcomposer_folder(tmp_path / "new"))
    assert shape.kind == legacy.kind == "xcomposer" and shape.parts == legacy.parts
    assert shape.layer_bytes == legacy.layer_bytes and shape.geometry == legacy.geometry


@pytest.mark.parametrize(("size", "hd_num", "grid", "tokens"), [
    ((1280, 720), 24, (2, 3), 2861),  # the anchor's photo: the real code's 2,861 image tokens
    ((720, 1280), 24, (3, 2), 2881),  # portrait: transposed for the scale, crops in its own orientation
    ((4000, 3000), 24, (4, 5), 8501),  # large: the crop budget bounds the grid (4·5 ≤ 24)
    ((4000, 3000), 6, (2, 2), 2061),  # the same as one of several images: 6 crops at most
    ((320, 200), 24, (1, 1), 841),  # small: never upscaled beyond ceil(width / 560) crops
    ((4000, 300), 24, (1, 8), 3641),  # a strip: wide but short
])
def test_xcomposer_image_tokens_from_the_image_size(size: tuple[int, int], hd_num: int, grid: tuple[int, int],
                                                   tokens: int) -> None:
    assert xcomposer_tokens.hd_grid(*size, hd_num) == grid
    assert xcomposer_tokens.image_token_count(*size, hd_num) == tokens
    bound, _crops = xcomposer_tokens.xcomposer_image_tokens(560, 14, hd_num)
    assert tokens <= bound
    assert xcomposer_tokens.hd_num_for(1) == 24 and xcomposer_tokens.hd_num_for(3) == 6
