"""What an XComposer2.5 folder is, read from its config.json and its weight names: the decoder as a
transformers LlamaConfig, the CLIP tower as a CLIPVisionConfig, and the few numbers the model code fixes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import ModelError

if TYPE_CHECKING:
    from transformers import CLIPVisionConfig, LlamaConfig

PLORA_RANK = 256  # the model code's lora_r (alpha 256 too: scaling 1); not in config.json
CLIP_WIDTH = 1024  # CLIP ViT-L/14 (OpenAI's, quick GELU) run at 560 px: 40×40 patches; layers come from the weights


@dataclass(frozen=True)
class XComposerSpec:
    """The architecture numbers of one folder."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    rms_norm_eps: float
    bias: bool
    max_positions: int
    rope: dict[str, Any]  # transformers' rope_parameters
    vision_layers: int
    bos_id: int
    eos_id: int
    pad_id: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def groups(self) -> int:
        return self.heads // self.kv_heads

    def llama_config(self) -> LlamaConfig:
        from transformers import LlamaConfig

        config = LlamaConfig(
            vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
            num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            hidden_act="silu", max_position_embeddings=self.max_positions, rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=False, attention_bias=self.bias, mlp_bias=False, rope_parameters=dict(self.rope),
            bos_token_id=self.bos_id, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
        )
        config._attn_implementation = "sdpa"  # linear memory in the prompt's length; the model's own is flash/eager
        return config

    def clip_config(self) -> CLIPVisionConfig:
        from transformers import CLIPVisionConfig

        config = CLIPVisionConfig(hidden_size=CLIP_WIDTH, intermediate_size=4 * CLIP_WIDTH, num_attention_heads=16,
                                  image_size=560, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                                  projection_dim=768, num_hidden_layers=self.vision_layers)
        config._attn_implementation = "sdpa"
        return config


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    theta = float(config.get("rope_theta", 10000.0))
    scaling = config.get("rope_scaling") or {}
    kind = str(scaling.get("type") or scaling.get("rope_type") or "default")
    if kind not in ("default", "dynamic", "linear"):
        raise ModelError(f"XComposer config.json asks for rope scaling '{kind}'; its model code knows only "
                         "'dynamic' and 'linear'.")
    if kind == "default":
        return {"rope_type": "default", "rope_theta": theta}
    return {"rope_type": kind, "factor": float(scaling["factor"]), "rope_theta": theta}


def read_spec(config: dict[str, Any], weight_names: set[str]) -> XComposerSpec:
    """The spec of a folder from its config.json dict and the names in its weight files."""
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        spec = XComposerSpec(
            hidden=hidden, intermediate=int(config["intermediate_size"]), layers=int(config["num_hidden_layers"]),
            heads=heads, kv_heads=int(config.get("num_key_value_heads") or heads), vocab=int(config["vocab_size"]),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)), bias=bool(config.get("bias", True)),
            max_positions=int(config.get("max_position_embeddings", 2048)), rope=_rope(config),
            vision_layers=_vision_layers(weight_names),
            bos_id=int(config.get("bos_token_id", 1)), eos_id=_first(config.get("eos_token_id", 2)),
            pad_id=_first(config.get("pad_token_id", 2)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"The XComposer config.json lacks a usable {exc}; is it an InternLM-XComposer2.5 config?") from None
    if hidden % heads or heads % spec.kv_heads:
        raise ModelError(f"The XComposer config has {heads} heads and {spec.kv_heads} KV heads for hidden {hidden}: "
                         "they do not divide evenly.")
    return spec


def _first(value: object) -> int:
    return int(value[0] if isinstance(value, list) else value)  # type: ignore[arg-type]


def _vision_layers(names: set[str]) -> int:
    marker = "vit.vision_tower.vision_model.encoder.layers."
    found = {int(n[len(marker):].split(".", 1)[0]) for n in names if n.startswith(marker)}
    if not found:
        raise ModelError("The weights hold no CLIP tower (no 'vit.vision_tower.vision_model.encoder.layers.*'): "
                         "is this an InternLM-XComposer2.5 folder?")
    return max(found) + 1
