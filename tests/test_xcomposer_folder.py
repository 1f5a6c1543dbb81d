"""The published-layout XComposer2.5 folder builder: config, weight names and shapes, both weight formats,
determinism, the trained tokenizer and the decoy code file."""
from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from core.errors import ModelError
from core.models import xcomposer_folder as xf


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return xf.build_xcomposer_folder(tmp_path_factory.mktemp("xc") / "tiny")


def _safetensors_weights(folder: Path) -> dict[str, tuple[int, ...]]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(set(index["weight_map"].values())):
        with safe_open(str(folder / file), framework="pt") as shard:
            for name in shard.keys():  # noqa: SIM118 (safe_open is not a mapping)
                assert index["weight_map"][name] == file
                shapes[name] = tuple(shard.get_slice(name).get_shape())
    assert set(shapes) == set(index["weight_map"])
    return shapes


def test_config_is_the_published_one_with_tiny_sizes(tiny_folder: Path) -> None:
    config = json.loads((tiny_folder / "config.json").read_text())
    assert config["model_type"] == "internlm2"
    assert config["architectures"] == ["InternLMXComposer2ForCausalLM"]
    assert config["auto_map"]["AutoModel"] == "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"]) == (4096, 2, 32, 8, 1024)
    assert config["vocab_size"] == 1000 == xf.tokenizer_size()
    assert config["rope_scaling"] == {"factor": 2.0, "type": "dynamic"} and config["rope_theta"] == 1000000
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 2)
    assert config["max_position_embeddings"] == 24576 and config["bias"] is False
    tokenizer_config = json.loads((tiny_folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["auto_map"]["AutoTokenizer"][0] == "tokenization_internlm2.InternLM2Tokenizer"


def test_weights_have_the_published_names_and_shapes(tiny_folder: Path) -> None:
    shapes = _safetensors_weights(tiny_folder)
    assert shapes == xf.weight_shapes("tiny", 1000)
    assert shapes["model.layers.1.attention.wqkv.weight"] == (6144, 4096)  # 32 q + 2×8 kv heads of 128
    assert shapes["model.layers.0.feed_forward.w2.Plora_A.weight"] == (256, 1024)
    assert shapes["model.layers.0.feed_forward.w2.Plora_B.weight"] == (4096, 256)
    assert shapes["vit.vision_tower.vision_model.embeddings.position_embedding.weight"] == (1601, 1024)
    assert shapes["vit.vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight"] == (4096, 1024)
    assert "vit.vision_tower.vision_model.encoder.layers.2.mlp.fc1.weight" not in shapes
    assert shapes["vision_proj.0.weight"] == (4096, 4096) and shapes["vision_proj.2.bias"] == (4096,)
    assert shapes["plora_glb_GN"] == (1, 1, 4096) and shapes["plora_sub_GN"] == (1, 1, 1, 4096)
    assert not any(name.endswith("position_ids") or "inv_freq" in name for name in shapes)


def test_7b_shapes_add_up_to_the_anchor_parameter_count() -> None:
    shapes = xf.weight_shapes("7b", 92544)
    params = sum(math.prod(shape) for shape in shapes.values())
    assert abs(params / 1e9 - 8.68) < 0.01  # the real code's model on the H200 had 8.68 B parameters
    clip = sum(math.prod(s) for n, s in shapes.items() if n.startswith("vit."))
    assert abs(clip / 1e6 - 304.6) < 0.5
    assert shapes["model.layers.31.feed_forward.w1.weight"] == (14336, 4096)


def test_both_formats_hold_the_same_deterministic_weights(tiny_folder: Path, tmp_path: Path) -> None:
    bin_folder = xf.build_xcomposer_folder(tmp_path / "bin", weight_format="bin", shards=3)
    index = json.loads((bin_folder / "pytorch_model.bin.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"pytorch_model-0000{n}-of-00003.bin" for n in (1, 2, 3)]
    name = "model.layers.1.attention.wo.Plora_B.weight"
    from_bin = torch.load(bin_folder / index["weight_map"][name], weights_only=True)[name]
    safetensors_index = json.loads((tiny_folder / "model.safetensors.index.json").read_text())
    with safe_open(str(tiny_folder / safetensors_index["weight_map"][name]), framework="pt") as shard:
        from_safetensors = shard.get_tensor(name)
    assert from_bin.dtype == torch.float32
    assert torch.equal(from_bin, from_safetensors)  # same seed, same bytes, whatever the format and sharding
    assert 0.015 < float(from_bin.std()) < 0.025


def test_seed_changes_the_weights_and_norms_sit_near_one() -> None:
    draws = [xf._random_tensor("model.norm.weight", (4096,), torch.Generator().manual_seed(seed), torch.float32, 1000)
             for seed in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert abs(float(draws[0].mean()) - 1.0) < 0.01


def test_output_rows_past_the_tokenizer_are_zero() -> None:
    rows = xf._random_tensor("output.weight", (1200, 8), torch.Generator().manual_seed(0), torch.bfloat16, 1000)
    assert rows.dtype == torch.bfloat16
    assert not rows[:1000].eq(0).all(dim=1).any() and rows[1000:].eq(0).all()


def test_tokenizer_asset_is_the_recipe_output_with_the_turn_markers(tiny_folder: Path) -> None:
    import sentencepiece as spm

    assert xf.train_tokenizer() == xf.TOKENIZER_ASSET.read_bytes()
    assert (tiny_folder / "tokenizer.model").read_bytes() == xf.TOKENIZER_ASSET.read_bytes()
    tokenizer = spm.SentencePieceProcessor(model_file=str(xf.TOKENIZER_ASSET))
    assert [tokenizer.id_to_piece(i) for i in range(5)] == ["<unk>", "<s>", "</s>", xf.TURN_END, xf.TURN_START]
    prompt = f"{xf.TURN_START}user\n图中有什么？{xf.TURN_END}\n"
    ids = tokenizer.encode(prompt)
    assert ids.count(3) == 1 and ids.count(4) == 1 and 0 not in ids
    assert tokenizer.decode(ids) == prompt


def test_decoy_code_file_raises_when_imported(tiny_folder: Path) -> None:
    with pytest.raises(ImportError, match="never import"):
        runpy.run_path(str(tiny_folder / "modeling_internlm_xcomposer2.py"))


def test_unknown_preset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="Unknown XComposer test preset"):
        xf.build_xcomposer_folder(tmp_path, preset="13b")


def test_reference_images_cover_the_hd_transform_cases() -> None:
    images = xf.reference_images()
    assert {name: image.size for name, image in images.items()} == {
        "wide": (1000, 400), "tall": (300, 700), "small": (320, 200), "panorama": (1800, 600)}
    assert images["wide"].tobytes() == xf.reference_images()["wide"].tobytes()
