"""Reading an XComposer2.5 folder's weights under their published names, shard by shard.

Published names map onto Loupe's modules (core/models/xcomposer/model.py) as follows; the fused tensors are
split as they are read, and each tensor is converted to the dtype and device it is placed on right away,
so a 7B model never exists twice:
- `model.tok_embeddings` → decoder.model.embed_tokens; `model.norm` → decoder.model.norm; `output` → decoder.lm_head
- `model.layers.N.attention.wqkv` (per KV group: its query heads, then k, then v) → self_attn.q/k/v_proj,
  its `Plora_B` split the same way, its `Plora_A` shared by the three;
- `attention.wo` → self_attn.o_proj; `feed_forward.w1|w3|w2` → mlp.gate|up|down_proj;
  `attention_norm` / `ffn_norm` → input_layernorm / post_attention_layernorm; `Plora_A|B` → lora_a|b;
- `vit.*`, `vision_proj.*`, `plora_glb_GN`, `plora_sub_GN` → image_encoder.* (CLIP's own layout inside);
- anything else (e.g. the OmniLive code's `video_mem_proj`) is not part of this model and is skipped.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch

from core.errors import ModelError

_LAYER_PARTS = {
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w3": "mlp.up_proj",
    "feed_forward.w2": "mlp.down_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_LORA = {"Plora_A": "lora_a", "Plora_B": "lora_b"}
_TOP = {
    "model.tok_embeddings.weight": "decoder.model.embed_tokens.weight",
    "model.norm.weight": "decoder.model.norm.weight",
    "output.weight": "decoder.lm_head.weight",
    "plora_glb_GN": "image_encoder.plora_glb_GN",
    "plora_sub_GN": "image_encoder.plora_sub_GN",
}


def weight_files(folder: Path) -> list[Path]:
    """The shard files the folder's index names (safetensors preferred), or its single weight file."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise ModelError(f"{index} is not a readable weight index: {exc}") from None
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise ModelError(f"{folder} lacks shard files its index names: {', '.join(missing[:3])}")
            return files
        if (folder / single).is_file():
            return [folder / single]
    raise ModelError(f"{folder} has no weights (model.safetensors[.index.json] or pytorch_model.bin[.index.json]).")


def names_in(files: list[Path]) -> set[str]:
    """Every tensor name in the shards, read from their headers (safetensors) or their pickles (.bin, mmap'd)."""
    names: set[str] = set()
    for path in files:
        for name, _load in _tensors(path):
            names.add(name)
    return names


def _tensors(path: Path) -> Iterator[tuple[str, Callable[[], torch.Tensor]]]:
    """(name, loader) of every tensor in one shard; a tensor is read only when its loader is called."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as shard:
            for name in shard.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield name, partial(shard.get_tensor, name)
        return
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for name, tensor in state.items():
        yield name, partial(_same, tensor)


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def split_fused_qkv(tensor: torch.Tensor, heads: int, kv_heads: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """wqkv rows (or its Plora_B / bias rows) → q, k, v rows, from InternLM2's layout: per KV group
    its query heads, then its key head, then its value head."""
    groups = heads // kv_heads
    rest = tensor.shape[1:]
    grouped = tensor.reshape(kv_heads, groups + 2, head_dim, *rest)
    q = grouped[:, :groups].reshape(heads * head_dim, *rest)
    k = grouped[:, groups].reshape(kv_heads * head_dim, *rest)
    v = grouped[:, groups + 1].reshape(kv_heads * head_dim, *rest)
    return q.contiguous(), k.contiguous(), v.contiguous()


def loupe_names(name: str, vision_prefix: str) -> list[str] | None:
    """Loupe's parameter name(s) for a published name (three for the fused wqkv parts), None to skip it."""
    if name in _TOP:
        return [_TOP[name]]
    if name.startswith("vit.vision_tower.vision_model."):
        return ["image_encoder.vit.vision_tower." + vision_prefix + name[len("vit.vision_tower.vision_model."):]]
    if name.startswith("vision_proj."):
        return ["image_encoder." + name]
    if not name.startswith("model.layers."):
        return None
    number, rest = name[len("model.layers."):].split(".", 1)
    base = f"decoder.model.layers.{number}."
    for published, lora in _LORA.items():
        rest = rest.replace(f".{published}.", f".{lora}.")
    if rest.startswith("attention.wqkv."):
        tail = rest[len("attention.wqkv."):]
        return [f"{base}self_attn.{p}.{tail}" for p in ("q_proj", "k_proj", "v_proj")]
    for published, loupe in _LAYER_PARTS.items():
        if rest.startswith(published + "."):
            return [base + loupe + rest[len(published):]]
    return None


def read_weights(files: list[Path], vision_prefix: str, heads: int, kv_heads: int, head_dim: int,
                 skipped: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(Loupe name, CPU tensor as stored) for every weight of the model, fused ones split; the published
    names that are not part of this model are appended to `skipped`."""
    for path in files:
        for name, load in _tensors(path):
            targets = loupe_names(name, vision_prefix)
            if targets is None:
                skipped.append(name)
                continue
            if len(targets) == 1:
                yield targets[0], load()
                continue
            tensor = load()
            if ".lora_a." in targets[0]:  # the LoRA's A is shared by q, k and v: only B is fused
                parts: tuple[torch.Tensor, ...] = (tensor, tensor, tensor)
            else:
                parts = split_fused_qkv(tensor, heads, kv_heads, head_dim)
            yield from zip(targets, parts)
