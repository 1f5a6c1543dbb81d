"""The XComposer2.5 model as Loupe runs it: the image encoder (vision.py) and an InternLM2 decoder that IS
transformers' LlamaForCausalLM with Partial-LoRA linears (plora.py), loaded from the published weights.

Built on the meta device, then every tensor is read once from the shards, converted and assigned where the
device map puts it (no random init, no second copy). The decoder brings transformers' generate(), SDPA
attention and its caches; the fast decode path reads it as a Llama-shaped language model (`as_decoder_view`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import ModelError
from core.models.model_shape import read_config
from core.models.xcomposer import weights
from core.models.xcomposer.plora import ImagePositions, PartialLoRALinear
from core.models.xcomposer.spec import PLORA_RANK, XComposerSpec, read_spec
from core.models.xcomposer.vision import ImageEncoder

# device_map keys of the pre-flight plan (published names) → Loupe's modules
_PLACED = {
    "vit": "image_encoder.vit", "vision_proj": "image_encoder.vision_proj",
    "plora_glb_GN": "image_encoder.plora_glb_GN", "plora_sub_GN": "image_encoder.plora_sub_GN",
    "model.tok_embeddings": "decoder.model.embed_tokens", "model.norm": "decoder.model.norm",
    "output": "decoder.lm_head",
}


def _with_plora(decoder: nn.Module, spec: XComposerSpec, positions: ImagePositions) -> None:
    """Swap the decoder's projections for Partial-LoRA ones (on the meta device, before loading)."""
    layers: Any = decoder.model.layers  # type: ignore[union-attr]  # a LlamaForCausalLM's ModuleList
    for layer in layers:
        for owner, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                             (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for name in names:
                plain = getattr(owner, name)
                setattr(owner, name, PartialLoRALinear(plain.in_features, plain.out_features, plain.bias is not None,
                                                       PLORA_RANK, positions, device="meta"))


class XComposerModel(nn.Module):
    """image_encoder (CLIP + projector + separators) and decoder (LlamaForCausalLM with PLoRA)."""

    def __init__(self, spec: XComposerSpec) -> None:
        super().__init__()
        from transformers import LlamaForCausalLM

        self.spec = spec
        self.image_positions = ImagePositions()
        self.image_encoder = ImageEncoder(spec)
        self.decoder = LlamaForCausalLM(spec.llama_config())
        _with_plora(self.decoder, spec, self.image_positions)

    @property
    def embed_device(self) -> torch.device:
        return self.decoder.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.lm_head.weight.dtype


@dataclass(frozen=True)
class _DecoderInner:
    language_model: Any


@dataclass(frozen=True)
class DecoderView:
    """The decoder as the fast decode path reads a Llama-shaped VLM: model.language_model and lm_head."""

    model: _DecoderInner
    lm_head: nn.Linear


def as_decoder_view(model: XComposerModel) -> DecoderView:
    return DecoderView(_DecoderInner(model.decoder.model), model.decoder.lm_head)


def _placement(device_map: Mapping[str, int | str] | None, default: torch.device) -> Callable[[str], torch.device]:
    """Loupe parameter name → its device, from the plan's device_map (published names)."""
    if not device_map:
        return lambda _name: default
    placed = {_PLACED.get(key, key.replace("model.layers.", "decoder.model.layers.")): value
              for key, value in device_map.items()}

    def device_of(name: str) -> torch.device:
        for prefix, where in placed.items():
            if name == prefix or name.startswith(prefix + "."):
                return torch.device(f"cuda:{where}" if isinstance(where, int) else where)
        raise ModelError(f"The device map places no module holding {name}.")
    return device_of


def _assign(root: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = root.get_submodule(owner_name)
    current = getattr(owner, leaf, None)
    if not isinstance(current, torch.Tensor):
        raise ModelError(f"The weights hold {name}, which this XComposer2.5 model does not have.")
    if tuple(current.shape) != tuple(tensor.shape):
        raise ModelError(f"The weight {name} has shape {tuple(tensor.shape)}; the config says {tuple(current.shape)}.")
    setattr(owner, leaf, nn.Parameter(tensor, requires_grad=False))


def _rebuild_buffers(model: XComposerModel, device_of: Callable[[str], torch.device]) -> None:
    """The non-persistent buffers (RoPE frequencies, CLIP position ids) are computed, not stored: make them
    on the device of the module that uses them."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    llama = model.decoder.model
    llama.rotary_emb = LlamaRotaryEmbedding(llama.config).to(device_of("decoder.model.embed_tokens.weight"))
    for module in model.modules():
        if hasattr(module, "position_ids") and isinstance(module.position_ids, torch.Tensor) and module.position_ids.is_meta:
            device = next(p.device for p in module.parameters())
            count = module.position_ids.shape[-1]
            module.register_buffer("position_ids", torch.arange(count, device=device).expand(1, -1), persistent=False)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ModelError(f"The folder's weights lack {len(left)} tensors this model needs, e.g. {', '.join(left[:3])}.")


def load_model(folder: Path, *, dtype: torch.dtype, device_map: Mapping[str, int | str] | None = None,
               device: str = "cpu") -> tuple[XComposerModel, list[str]]:
    """The model of `folder` with its weights in `dtype`, placed by `device_map` (published names) or all on
    `device`; also the published names that were skipped as not part of this model."""
    files = weights.weight_files(folder)
    spec = read_spec(read_config(folder), weights.names_in(files))
    with torch.device("meta"):
        model = XComposerModel(spec)
    clip = model.image_encoder.vit.vision_tower
    vision_prefix = "vision_model." if hasattr(clip, "vision_model") else ""
    device_of = _placement(device_map, torch.device(device))
    skipped: list[str] = []
    last: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)  # (as read, as placed): wqkv's shared A
    for name, tensor in weights.read_weights(files, vision_prefix, spec.heads, spec.kv_heads, spec.head_dim, skipped):
        placed = last[1] if tensor is last[0] else tensor.to(device=device_of(name), dtype=dtype)
        assert placed is not None
        _assign(model, name, placed)
        last = (tensor, placed)
    _rebuild_buffers(model, device_of)
    if device_map and len({str(where) for where in device_map.values()}) > 1:  # a split decoder only
        from core.models.xcomposer.placement import align_devices

        align_devices(model)
    return model.eval(), skipped
