"""What a model is made of, read from its folder's config alone: its placeable parts and their bytes.

Native transformers architectures are built on the meta device (accelerate's `init_empty_weights`), so no
weight is read and nothing is allocated; the decoder layers are found generically (the largest ModuleList
whose length is the text config's `num_hidden_layers`) and every other piece along the path to them
becomes one part: vision tower, projector, embeddings, rotary tables, final norm, LM head.

InternLM-XComposer2.5 is recognised from its published config.json (model_type "internlm2" with the
architecture "InternLMXComposer2ForCausalLM", or model_type "internlmxcomposer2"); transformers has no class
for it, so its parts are counted from config arithmetic under its published weight names (`vit`,
`vision_proj`, `plora_glb_GN`, `plora_sub_GN`, `model.tok_embeddings`, `model.layers.N`, `model.norm`,
`output`). Its vision tower is not described in config.json (the model runs CLIP ViT-L/14 at 560 px); a
`vision_config` there overrides that. Its InternLM2 layers carry Partial-LoRA adapters (rank 256 on wqkv,
wo, w1, w2, w3), counted too. Loupe's own implementation runs it (core/backends/xcomposer.py): SDPA
attention and logits for the last position only, so its memory is counted like any native model's.
The memory geometry is read here from a config for the planner and, from a loaded model's config, admission.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ModelError
from core.models.memory_model import Geometry
from core.models.xcomposer_tokens import XCOMPOSER_HD_NUM, XCOMPOSER_MULTI_HD_NUM, xcomposer_image_tokens

XCOMPOSER_TYPES = ("internlmxcomposer2",)  # model_type values that name XComposer whatever the architecture
XCOMPOSER_ARCHITECTURE = "InternLMXComposer2ForCausalLM"  # with model_type "internlm2", as published
PLORA_RANK = 256  # Partial-LoRA rank in XComposer2.x's InternLM2 layers (its modeling code, not its config)
XCOMPOSER_VISION = {  # CLIP ViT-L/14 as XComposer2.5 runs it: 560 px crops, 2x2 patch merge → 400 tokens
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
    "num_attention_heads": 16, "image_size": 560, "patch_size": 14,
}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
DYNAMIC_SIDE = 1280  # image side assumed for dynamic-resolution vision towers with no stated pixel cap
_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm")


@dataclass(frozen=True)
class Part:
    """One device_map entry that is not a decoder layer, its bytes, and which end of the model it belongs to."""

    name: str
    nbytes: int
    place: str  # "first": where tokens and images enter (GPU0); "last": with the last decoder layers


@dataclass(frozen=True)
class ModelShape:
    """A model's placeable parts plus the geometry that sizes its KV cache and activations."""

    name: str
    kind: str  # "transformers" | "xcomposer"
    dtype: str
    params: int
    parts: tuple[Part, ...]
    layer_prefix: str  # device_map keys of the decoder layers are f"{layer_prefix}.{i}"
    layer_bytes: tuple[int, ...]
    geometry: Geometry  # what sizes its KV cache and activations (core/models/memory_model.py)
    vision_tokens_per_crop: int = 0  # tokens the vision tower sees per crop (patches + CLS)
    image_tokens: int = 0  # LLM tokens of the images of one question, at most
    crops: int = 0  # vision-tower crops of one question, at most

    @property
    def weights_bytes(self) -> int:
        return sum(p.nbytes for p in self.parts) + sum(self.layer_bytes)

    @property
    def num_layers(self) -> int:
        return len(self.layer_bytes)


def read_config(folder: Path | str) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelError(f"{folder} has no config.json; give a model folder (or a folder holding its config.json).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None


def is_xcomposer(config: dict[str, Any]) -> bool:
    """An InternLM-XComposer2.x config: the published one says model_type "internlm2" (the decoder's type)
    and names the XComposer class in `architectures`; plain InternLM2 chat models share that model_type."""
    model_type = str(config.get("model_type", "")).lower()
    architectures = config.get("architectures") or ()
    return model_type in XCOMPOSER_TYPES or (
        model_type == "internlm2" and isinstance(architectures, (list, tuple)) and XCOMPOSER_ARCHITECTURE in architectures)


def load_shape(folder: Path | str, *, dtype: str = "bfloat16", max_images: int = 4) -> ModelShape:
    """The shape of the model in `folder`, from config.json (and preprocessor config) only."""
    config = read_config(folder)
    name = Path(folder).resolve().name
    if is_xcomposer(config):
        return xcomposer_shape(config, name=name, dtype=dtype, max_images=max_images)
    return native_shape(Path(folder), name=name, dtype=dtype, max_images=max_images)


# -- XComposer: config arithmetic ----------------------------------------------------------------
def xcomposer_vision(config: dict[str, Any]) -> dict[str, Any]:
    """The CLIP tower XComposer2.5 runs: its default, overridden by a `vision_config` in config.json."""
    given = config.get("vision_config") or {}
    return {**XCOMPOSER_VISION, **(given if isinstance(given, dict) else given.to_dict())}


def xcomposer_geometry(config: dict[str, Any], dtype_bytes: int) -> Geometry:
    """The memory geometry of an XComposer2.5 config (the dict of config.json, or a loaded config's to_dict())."""
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        inter, vocab = int(config["intermediate_size"]), int(config["vocab_size"])
        int(config["num_hidden_layers"])  # checked here, used by xcomposer_shape
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"The XComposer config.json lacks a usable {exc}; is it an InternLM-XComposer2.5 config?") from None
    vision = xcomposer_vision(config)
    return Geometry(hidden=hidden, intermediate=inter, heads=heads, kv_heads=int(config.get("num_key_value_heads", heads)),
                    head_dim=hidden // heads, vocab=vocab, dtype_bytes=dtype_bytes, vision_hidden=vision["hidden_size"],
                    vision_intermediate=vision["intermediate_size"], vision_layers=vision["num_hidden_layers"])


def xcomposer_shape(config: dict[str, Any], *, name: str, dtype: str = "bfloat16", max_images: int = 4) -> ModelShape:
    size = DTYPE_BYTES[dtype]
    g = geometry = xcomposer_geometry(config, size)
    hidden, heads, kv_heads, inter, vocab, head_dim = g.hidden, g.heads, g.kv_heads, g.intermediate, g.vocab, g.head_dim
    layers, vision = int(config["num_hidden_layers"]), xcomposer_vision(config)

    def plora(d_in: int, d_out: int) -> int:
        return d_in * d_out + PLORA_RANK * (d_in + d_out)

    layer = (plora(hidden, (heads + 2 * kv_heads) * head_dim) + plora(hidden, hidden)
             + 2 * plora(hidden, inter) + plora(inter, hidden) + 2 * hidden)
    vit = _clip_vision_params(vision)
    merged = 4 * vision["hidden_size"]  # 2x2 neighbouring patches concatenated before the projector
    parts = (
        Part("vit", vit * size, "first"),
        Part("vision_proj", (merged * hidden + hidden + hidden * hidden + hidden) * size, "first"),
        Part("plora_glb_GN", merged * size, "first"),
        Part("plora_sub_GN", merged * size, "first"),
        Part("model.tok_embeddings", vocab * hidden * size, "first"),
        Part("model.norm", hidden * size, "last"),
        Part("output", vocab * hidden * size, "last"),
    )
    one = xcomposer_image_tokens(vision["image_size"], vision["patch_size"], XCOMPOSER_HD_NUM)
    each = xcomposer_image_tokens(vision["image_size"], vision["patch_size"], XCOMPOSER_MULTI_HD_NUM)
    several = (each[0] * max_images, each[1] * max_images) if max_images > 1 else one
    image_tokens, crops = max(one, several)
    grid = vision["image_size"] // vision["patch_size"]
    params = sum(p.nbytes for p in parts) // size + layer * layers
    return ModelShape(
        name=name, kind="xcomposer", dtype=dtype, params=params, parts=parts, layer_prefix="model.layers",
        layer_bytes=(layer * size,) * layers, geometry=geometry,
        vision_tokens_per_crop=grid * grid + 1, image_tokens=image_tokens, crops=crops,
    )


def _clip_vision_params(vision: dict[str, Any]) -> int:
    """Exact parameter count of a CLIP vision tower, built on the meta device from transformers' own class."""
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModel

    with init_empty_weights():
        model = CLIPVisionModel(CLIPVisionConfig(**vision))
    return sum(p.numel() for p in model.parameters())


# -- native transformers: the meta device -------------------------------------------------------
def _meta_model(folder: Path) -> tuple[Any, Any]:
    import transformers
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(
            f"Loupe cannot read the model config in {folder} ({exc}). Loupe plans native transformers models "
            "and InternLM-XComposer2.5; other models that ship their own code are not supported."
        ) from None
    last_error: Exception | None = None
    for auto in ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel"):
        try:
            with init_empty_weights():
                return getattr(transformers, auto).from_config(config), config
        except (ValueError, KeyError) as exc:
            last_error = exc
    raise ModelError(f"transformers has no model class for the config in {folder}: {last_error}")


def _decoder_layers(model: Any, num_layers: int | None) -> str:
    import torch

    candidates = [
        (name, sum(p.numel() for p in module.parameters()), len(module))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0
    ]
    exact = [c for c in candidates if c[2] == num_layers]
    pool = exact or candidates
    if not pool:
        raise ModelError("Loupe could not find the decoder layers of this model (no layer list in it).")
    return max(pool, key=lambda c: c[1])[0]


def native_shape(folder: Path, *, name: str, dtype: str = "bfloat16", max_images: int = 4) -> ModelShape:
    import torch
    from accelerate.utils import compute_module_sizes

    model, config = _meta_model(folder)
    model.tie_weights()  # init_empty_weights skips tying; a shared LM head must be seen as shared
    text = text_config(config)
    sizes = compute_module_sizes(model, dtype=getattr(torch, dtype))
    prefix = _decoder_layers(model, getattr(text, "num_hidden_layers", None))
    layer_parent = prefix.rsplit(".", 1)[0] if "." in prefix else ""
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    head_name = next((n for n, m in model.named_modules() if m is head), None)

    parts: list[Part] = []
    path = prefix.split(".")
    for depth in range(len(path)):
        owner_name = ".".join(path[:depth])
        owner = model.get_submodule(owner_name)
        names = [n for n, _ in owner.named_children() if n != path[depth]]
        names += [n for n, _ in owner.named_parameters(recurse=False)]
        names += [n for n, _ in owner.named_buffers(recurse=False)]
        for child in names:
            full = f"{owner_name}.{child}" if owner_name else child
            last = (full == head_name and not tied) or (
                owner_name == layer_parent and child.lower().endswith(_NORM_NAMES))
            parts.append(Part(full, int(sizes.get(full, 0)), "last" if last else "first"))
    layers = len(model.get_submodule(prefix))
    vision = getattr(config, "vision_config", None)
    per_crop, per_image = _native_image_tokens(folder, config, vision)
    return ModelShape(
        name=name, kind="transformers", dtype=dtype, params=sum(p.numel() for p in model.parameters()),
        parts=tuple(parts), layer_prefix=prefix,
        layer_bytes=tuple(int(sizes[f"{prefix}.{i}"]) for i in range(layers)),
        geometry=native_geometry(config, DTYPE_BYTES[dtype]),
        vision_tokens_per_crop=per_crop, image_tokens=per_image * max_images if vision else 0,
        crops=max_images if vision else 0,
    )


def text_config(config: Any) -> Any:
    """The language model's part of a transformers config (the config itself for text-only models)."""
    return getattr(config, "llm_config", None) or config.get_text_config()


def native_geometry(config: object, dtype_bytes: int) -> Geometry:
    """The memory geometry of a transformers config (AutoConfig's, or a loaded model's)."""
    text = text_config(config)
    vision = getattr(config, "vision_config", None)
    hidden, heads = int(text.hidden_size), int(text.num_attention_heads)
    return Geometry(
        hidden=hidden, intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden), heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
        vocab=int(getattr(text, "vocab_size", 0) or getattr(config, "vocab_size", 0) or 0), dtype_bytes=dtype_bytes,
        vision_hidden=int(getattr(vision, "hidden_size", 0) or 0),
        vision_intermediate=int(getattr(vision, "intermediate_size", 0) or 0),
        vision_layers=int(getattr(vision, "num_hidden_layers", None) or getattr(vision, "depth", 0) or 0),
    )


def _side(value: Any) -> int:
    """image_size / patch_size as int, whether the config gives one number or [height, width]."""
    if isinstance(value, (list, tuple)):
        value = max(value)
    if isinstance(value, dict):
        value = max(value.values())
    return int(value or 0)


def _native_image_tokens(folder: Path, config: object, vision: object) -> tuple[int, int]:
    """(vision-tower tokens per image, LLM tokens per image), from the config or the preprocessor's pixel cap.

    Dynamic-resolution towers whose size the folder does not state are sized for a DYNAMIC_SIDE-pixel
    square image (Loupe's prepared images are at most 1280 px wide).
    """
    if vision is None:
        return 0, 0
    patch = _side(getattr(vision, "patch_size", 14)) or 14
    merge = int(getattr(config, "spatial_merge_size", None) or getattr(vision, "spatial_merge_size", None) or 1)
    pre = Path(folder) / "preprocessor_config.json"
    processor = json.loads(pre.read_text(encoding="utf-8")) if pre.is_file() else {}
    max_pixels = processor.get("max_pixels") or (processor.get("size") or {}).get("max_pixels")
    side = _side(getattr(vision, "image_size", None))
    if max_pixels:  # dynamic resolution (Qwen2-VL style): merge_size² patches become one token
        merge = int(processor.get("merge_size", merge) or 1)
        patches = math.ceil(int(max_pixels) / (patch * patch))
    else:
        patches = (side or DYNAMIC_SIDE) ** 2 // (patch * patch)
    tokens = getattr(config, "image_seq_length", None) or getattr(config, "mm_tokens_per_image", None)
    return patches + 1, int(tokens or math.ceil(patches / (merge * merge)))
