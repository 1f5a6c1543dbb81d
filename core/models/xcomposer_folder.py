"""A model folder in the published InternLM-XComposer2.5 layout, with deterministic random weights.

What `internlm/internlm-xcomposer2d5-7b` looks like on disk (config.json with model_type "internlm2", weights
under the published names, sharded with an index, the sentencepiece tokenizer and its configs), to test Loupe's
native implementation on CPU ("tiny": hidden 4096, which the vision projector fixes; 2 decoder and 2 CLIP
layers) and measure it on a GPU ("7b": the real sizes). A decoy `modeling_internlm_xcomposer2.py` raises on import.
The tokenizer (1000 pieces, trained by `train_tokenizer()`, committed as assets/models/xcomposer_tokenizer.model)
has <unk> 0, <s> 1, </s> 2, the turn markers as single pieces and byte fallback. In "7b" the vocabulary stays
92544 (the matmul a real answer pays for); rows of `output` past the tokenizer are zero so greedy stays inside it.
"""
from __future__ import annotations

import io
import itertools
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ModelError
from core.settings import ASSETS_DIR

if TYPE_CHECKING:
    import torch
    from PIL import Image

TOKENIZER_ASSET = ASSETS_DIR / "models" / "xcomposer_tokenizer.model"
TURN_START = "[UNUSED_TOKEN_146]"
TURN_END = "[UNUSED_TOKEN_145]"
CLIP_IMAGE_SIZE = 560
CLIP_PATCH = 14
CLIP_WIDTH = 1024
CLIP_MLP = 4096
PLORA_RANK = 256
HIDDEN = 4096  # the vision projector and the GN separators are fixed at 4096 in the model's code
WEIGHT_STD = 0.02  # small enough that 32 layers stay finite in bf16, large enough that logits are not ties
DECOY_MESSAGE = "Loupe must never import a model folder's own code"


@dataclass(frozen=True)
class XComposerPreset:
    """The sizes that differ between the CPU test model and the full-size one."""

    layers: int
    intermediate: int
    clip_layers: int
    vocab: int | None  # None: the tokenizer's size


PRESETS = {
    "tiny": XComposerPreset(layers=2, intermediate=1024, clip_layers=2, vocab=None),
    "7b": XComposerPreset(layers=32, intermediate=14336, clip_layers=24, vocab=92544),
}

AUTO_MAP = {
    "AutoConfig": "configuration_internlm_xcomposer2.InternLMXcomposer2Config",
    "AutoModel": "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM",
    "AutoModelForCausalLM": "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM",
}


def tokenizer_corpus() -> list[str]:
    """English and Chinese sentences in the shape of the fixture questions and of short image descriptions."""
    subjects = [("The red car", "红色的汽车"), ("A small cat", "一只小猫"), ("The old man", "那位老人"),
                ("A blue bird", "一只蓝色的鸟"), ("The tall tree", "高高的树"), ("Two children", "两个孩子"),
                ("The white house", "白色的房子"), ("A green bottle", "绿色的瓶子"), ("The document", "这份文件"),
                ("The table", "这张表格"), ("The user", "用户"), ("The assistant", "助手")]
    verbs = [("is standing next to", "站在"), ("is looking at", "看着"), ("sits on", "坐在"), ("is behind", "位于"),
             ("is in front of", "停在"), ("points at", "指向")]
    objects = [("a wooden door.", "木门旁边。"), ("the yellow sign.", "黄色标志前面。"),
               ("three black boxes.", "三个黑色盒子上。"), ("the river bank.", "河岸边。"),
               ("a large window.", "大窗户下面。"), ("the price tag.", "价格标签。")]
    questions = [("What is in the image?", "图中有什么？"), ("Describe the image in detail.", "请详细描述这张图片。"),
                 ("How many objects are there?", "图中有几个物体？"), ("What colour is the car?", "汽车是什么颜色的？"),
                 ("Compare the two images.", "比较这两张图片。"), ("What does the sign say?", "标志上写着什么？"),
                 ("Where is the cat?", "猫在哪里？"), ("Is there a person in the picture?", "图片里有人吗？"),
                 ("And what about the second one?", "那第二张呢？"), ("Describe the shapes and colours.", "描述形状和颜色。")]
    lines = []
    for (s_en, s_zh), (v_en, v_zh), (o_en, o_zh) in itertools.product(subjects, verbs, objects):
        lines += [f"{s_en} {v_en} {o_en}", f"{s_zh}{v_zh}{o_zh}"]
    lines += [text for pair in questions for text in pair]
    lines += ["user", "assistant", "system"] * 20
    lines += [f"There are {n} items, 共{n}个。" for n in range(100)]
    return lines


def train_tokenizer() -> bytes:
    """The recipe of assets/models/xcomposer_tokenizer.model (kept so the file can be made again)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus()), model_writer=model, vocab_size=1000, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, split_digits=True,
        # identity, not NFKC: "？" must stay the full-width mark so Chinese questions decode as typed
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        user_defined_symbols=[TURN_END, TURN_START], unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2,
    )
    return model.getvalue()


def tokenizer_size() -> int:
    import sentencepiece as spm

    return int(spm.SentencePieceProcessor(model_file=str(TOKENIZER_ASSET)).get_piece_size())


def published_config(preset: str, vocab: int) -> dict[str, object]:
    """config.json as published for internlm-xcomposer2d5-7b, with the preset's sizes."""
    sizes = PRESETS[preset]
    return {
        "architectures": ["InternLMXComposer2ForCausalLM"],
        "attn_implementation": "flash_attention_2",
        "auto_map": dict(AUTO_MAP),
        "bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": sizes.intermediate,
        "max_length": 16384,
        "max_position_embeddings": 24576,
        "model_type": "internlm2",
        "num_attention_heads": 32,
        "num_hidden_layers": sizes.layers,
        "num_key_value_heads": 8,
        "pad_token_id": 2,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 2.0, "type": "dynamic"},
        "rope_theta": 1000000,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.33.2",
        "use_cache": True,
        "vocab_size": vocab,
    }


TOKENIZER_CONFIG = {
    "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
    "bos_token": "<s>",
    "clean_up_tokenization_spaces": False,
    "eos_token": "</s>",
    "model_max_length": 1000000000000000019884624838656,
    "pad_token": "</s>",
    "tokenizer_class": "InternLM2Tokenizer",
    "unk_token": "<unk>",
}
SPECIAL_TOKENS_MAP = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}


def weight_shapes(preset: str, vocab: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of the published checkpoint, by its saved name, in file order."""
    sizes = PRESETS[preset]
    head_dim, heads, kv_heads = HIDDEN // 32, 32, 8
    shapes: dict[str, tuple[int, ...]] = {"model.tok_embeddings.weight": (vocab, HIDDEN)}
    plora_linears = {  # (out, in) of each linear that has a Partial-LoRA branch
        "attention.wqkv": ((heads + 2 * kv_heads) * head_dim, HIDDEN), "attention.wo": (HIDDEN, HIDDEN),
        "feed_forward.w1": (sizes.intermediate, HIDDEN), "feed_forward.w3": (sizes.intermediate, HIDDEN),
        "feed_forward.w2": (HIDDEN, sizes.intermediate),
    }
    for layer in range(sizes.layers):
        prefix = f"model.layers.{layer}."
        for linear, (out_dim, in_dim) in plora_linears.items():
            shapes[f"{prefix}{linear}.weight"] = (out_dim, in_dim)
            shapes[f"{prefix}{linear}.Plora_A.weight"] = (PLORA_RANK, in_dim)
            shapes[f"{prefix}{linear}.Plora_B.weight"] = (out_dim, PLORA_RANK)
        shapes[f"{prefix}attention_norm.weight"] = (HIDDEN,)
        shapes[f"{prefix}ffn_norm.weight"] = (HIDDEN,)
    shapes["model.norm.weight"] = (HIDDEN,)
    shapes["output.weight"] = (vocab, HIDDEN)
    shapes["plora_glb_GN"] = (1, 1, HIDDEN)
    shapes["plora_sub_GN"] = (1, 1, 1, HIDDEN)
    clip = "vit.vision_tower.vision_model."
    positions = (CLIP_IMAGE_SIZE // CLIP_PATCH) ** 2 + 1  # 40×40 patches + the class position, saved at 560 px
    shapes[f"{clip}embeddings.class_embedding"] = (CLIP_WIDTH,)
    shapes[f"{clip}embeddings.patch_embedding.weight"] = (CLIP_WIDTH, 3, CLIP_PATCH, CLIP_PATCH)
    shapes[f"{clip}embeddings.position_embedding.weight"] = (positions, CLIP_WIDTH)
    shapes[f"{clip}pre_layrnorm.weight"] = shapes[f"{clip}pre_layrnorm.bias"] = (CLIP_WIDTH,)
    for layer in range(sizes.clip_layers):
        prefix = f"{clip}encoder.layers.{layer}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[f"{prefix}self_attn.{proj}.weight"] = (CLIP_WIDTH, CLIP_WIDTH)
            shapes[f"{prefix}self_attn.{proj}.bias"] = (CLIP_WIDTH,)
        shapes[f"{prefix}layer_norm1.weight"] = shapes[f"{prefix}layer_norm1.bias"] = (CLIP_WIDTH,)
        shapes[f"{prefix}mlp.fc1.weight"] = (CLIP_MLP, CLIP_WIDTH)
        shapes[f"{prefix}mlp.fc1.bias"] = (CLIP_MLP,)
        shapes[f"{prefix}mlp.fc2.weight"] = (CLIP_WIDTH, CLIP_MLP)
        shapes[f"{prefix}mlp.fc2.bias"] = (CLIP_WIDTH,)
        shapes[f"{prefix}layer_norm2.weight"] = shapes[f"{prefix}layer_norm2.bias"] = (CLIP_WIDTH,)
    shapes[f"{clip}post_layernorm.weight"] = shapes[f"{clip}post_layernorm.bias"] = (CLIP_WIDTH,)
    shapes["vision_proj.0.weight"] = (HIDDEN, 4 * CLIP_WIDTH)  # 2×2 merged CLIP features in
    shapes["vision_proj.0.bias"] = (HIDDEN,)
    shapes["vision_proj.2.weight"] = (HIDDEN, HIDDEN)
    shapes["vision_proj.2.bias"] = (HIDDEN,)
    return shapes


def _random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype,
                   real_vocab: int) -> torch.Tensor:
    import torch

    # Token embeddings larger than the attention output: with 0.02 (or 1.0) every decoded token after an image
    # only echoes the attention average over the image tokens and greedy repeats one id; at 3.0 the 12 greedy
    # ids of the fixture cases vary and still depend on the question and the image.
    std = 3.0 if name == "model.tok_embeddings.weight" else WEIGHT_STD
    values = torch.randn(shape, generator=generator, device=generator.device) * std
    if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):  # RMSNorm and CLIP's LayerNorm scales
        values += 1.0  # norm scales near one (not exactly: a loader that skips them must show)
    if name == "output.weight":
        values[real_vocab:] = 0.0  # ids past the small tokenizer never win greedy
    return values.to(dtype).cpu().contiguous()


def _shard_ranges(shapes: dict[str, tuple[int, ...]], shards: int) -> list[list[str]]:
    """Names split into `shards` consecutive groups of about equal size (as the published shards are)."""
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    target = sum(sizes.values()) / shards
    groups: list[list[str]] = [[]]
    filled = 0
    for name, size in sizes.items():
        if filled >= target * len(groups) and len(groups) < shards:
            groups.append([])
        groups[-1].append(name)
        filled += size
    return groups


def build_xcomposer_folder(path: Path, *, preset: str = "tiny", seed: int = 0, dtype: str = "float32",
                           weight_format: str = "safetensors", shards: int = 2, device: str = "cpu") -> Path:
    """Write the folder at `path` (created; replaced files if it exists) and return it.

    `device` is where the random numbers are drawn ("cuda" makes the 7b build fast on a GPU machine); the same
    seed on the same device gives the same bytes.
    """
    import torch

    if preset not in PRESETS:
        raise ModelError(f"Unknown XComposer test preset {preset!r}: use one of {', '.join(PRESETS)}.")
    if weight_format not in ("safetensors", "bin"):
        raise ModelError(f"Unknown weight format {weight_format!r}: use 'safetensors' or 'bin'.")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    real_vocab = tokenizer_size()
    vocab = PRESETS[preset].vocab or real_vocab
    shapes = weight_shapes(preset, vocab)
    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator(device=device).manual_seed(seed)
    groups = _shard_ranges(shapes, shards)
    weight_map: dict[str, str] = {}
    total_bytes = 0
    for number, names in enumerate(groups, start=1):
        tensors = {name: _random_tensor(name, shapes[name], generator, torch_dtype, real_vocab) for name in names}
        total_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        if weight_format == "safetensors":
            file = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
            from safetensors.torch import save_file

            save_file(tensors, str(path / file), metadata={"format": "pt"})
        else:
            file = f"pytorch_model-{number:05d}-of-{len(groups):05d}.bin"
            torch.save(tensors, path / file)
        weight_map.update(dict.fromkeys(names, file))
        del tensors
    index = "model.safetensors.index.json" if weight_format == "safetensors" else "pytorch_model.bin.index.json"
    (path / index).write_text(json.dumps({"metadata": {"total_size": total_bytes}, "weight_map": weight_map}, indent=2))
    config = published_config(preset, vocab)
    (path / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "transformers_version": "4.33.2"}, indent=2))
    shutil.copyfile(TOKENIZER_ASSET, path / "tokenizer.model")
    (path / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    (path / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS_MAP, indent=2))
    (path / "modeling_internlm_xcomposer2.py").write_text(f"raise ImportError({DECOY_MESSAGE!r})\n")
    return path


def reference_images() -> dict[str, Image.Image]:
    """Drawn images for the fixture cases, sized so each step of the HD transform runs with few crops:
    "wide" (1000×400: a 1×2 grid of 560-px crops, white padding at the bottom), "tall" (300×700: transposed,
    a 2×1 grid), "small" (320×200: one crop) and "panorama" (1800×600: 1×3 at the hd_num 6 each of several
    images gets, where hd_num 24 would give 2×4)."""
    from PIL import Image, ImageDraw

    images = {}
    for name, size, background in (("wide", (1000, 400), (230, 240, 250)), ("tall", (300, 700), (250, 245, 220)),
                                   ("small", (320, 200), (255, 255, 255)), ("panorama", (1800, 600), (235, 250, 235))):
        image = Image.new("RGB", size, background)
        draw = ImageDraw.Draw(image)
        width, height = size
        draw.rectangle((width // 10, height // 8, width // 2, height * 7 // 8), fill=(200, 30, 30))
        draw.ellipse((width // 2, height // 5, width * 9 // 10, height * 4 // 5), fill=(30, 120, 220))
        draw.polygon([(width // 3, height // 2), (width * 2 // 3, height // 10), (width * 5 // 6, height // 2)],
                     fill=(240, 180, 0))
        draw.line((0, height - 1, width - 1, 0), fill=(20, 20, 20), width=max(2, width // 100))
        images[name] = image
    return images
