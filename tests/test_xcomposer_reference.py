"""Loupe's XComposer2.5 against the model's real code: the fixture holds what the real code (transformers
4.45.2, float32, CPU) produced on the same tiny published-layout folder; here the same folder is built and
Loupe's implementation must give the same prompt and image token counts, first-step logits within 1e-4
(relative to their scale) and identical greedy ids. Plus the pieces on their own: HD grid, tokenizer and
prompt rules, the fused-qkv split, Partial-LoRA, and the fast decode path against generate()."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from core.models.xcomposer import answering
from core.models.xcomposer.fast_path import XComposerFastDecoder
from core.models.xcomposer.hd_transform import hd_grid, hd_image, hd_pixels
from core.models.xcomposer.model import XComposerModel, load_model
from core.models.xcomposer.plora import ImagePositions, PartialLoRALinear
from core.models.xcomposer.prompt import build_pieces
from core.models.xcomposer.tokenizer import XComposerTokenizer
from core.models.xcomposer.weights import split_fused_qkv
from core.models.xcomposer_folder import reference_images

FIXTURE = Path(__file__).parent / "fixtures" / "xcomposer_reference.json"


def _fixture() -> dict[str, Any]:
    if not FIXTURE.is_file():
        pytest.skip("the real code's fixture is not recorded yet")
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _case_ids() -> list[str]:
    return [c["name"] for c in json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]] if FIXTURE.is_file() else []


@pytest.fixture(scope="module")
def loaded(xcomposer_tiny_dir: Path) -> tuple[XComposerModel, XComposerTokenizer]:
    model, skipped = load_model(xcomposer_tiny_dir, dtype=torch.float32)
    assert skipped == []
    return model, XComposerTokenizer(xcomposer_tiny_dir)


def _inputs(tokenizer: XComposerTokenizer, case: dict[str, Any]) -> answering.XComposerInputs:
    """The case's prompt; `images` None is chat(image=None), [] is chat(image=[]) (see prompt.py)."""
    pictures = reference_images()
    history = tuple((q, a) for q, a in case.get("history", []))
    names = case["images"] or []
    return answering.encode(tokenizer, case["question"], [pictures[n] for n in names], history,
                            as_image_list=case["images"] is not None)


# -- the pieces on their own ----------------------------------------------------------------------
def test_hd_grid_gives_the_model_codes_token_counts() -> None:
    photo = hd_grid(1280, 720, 24)
    assert (photo.rows, photo.columns, photo.image_tokens) == (2, 3, 2861)  # the anchor's 1280×720 photo
    assert hd_grid(320, 200, 24).image_tokens == (1 + 1) * 400 + 1 + 2 * 20
    tall = hd_grid(720, 1280, 24)  # portrait: transposed, so the grid is 3 rows × 2 columns
    assert (tall.rows, tall.columns, tall.image_tokens) == (3, 2, (6 + 1) * 400 + 1 + 4 * 20)
    assert hd_grid(1280, 720, 6).rows * hd_grid(1280, 720, 6).columns <= 6


def test_hd_image_pads_white_below_a_wide_image_and_right_of_a_tall_one() -> None:
    pictures = reference_images()
    wide, tall = hd_image(pictures["wide"], 24), hd_image(pictures["tall"], 24)
    assert pictures["wide"].size == (1000, 400) and pictures["tall"].size == (300, 700)
    assert wide.size == (1120, 560) and wide.getpixel((10, 559)) == (255, 255, 255)  # 1120×448, padded below
    assert tall.size == (560, 1120) and tall.getpixel((559, 10)) == (255, 255, 255)  # 480×1120, padded on its right
    pixels = hd_pixels(pictures["wide"], 24)
    assert pixels.shape == (1, 3, 560, 1120)
    white = (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor([0.26862954, 0.26130258, 0.27577711])
    assert torch.allclose(pixels[0, :, 559, 10], white)


def test_prompt_bos_rules_and_image_markers(loaded: tuple[XComposerModel, XComposerTokenizer]) -> None:
    _model, tokenizer = loaded
    text_only = build_pieces(tokenizer, "hi", 0)
    assert text_only.texts[0][:2] == (tokenizer.bos_id, tokenizer.bos_id)  # the real code's double BOS
    assert build_pieces(tokenizer, "hi", 0, as_image_list=True).texts[0][:2] != (tokenizer.bos_id,) * 2  # chat(image=[])
    one = build_pieces(tokenizer, "hi", 1)  # image in front: the first piece is BOS alone
    assert one.texts[0] == (tokenizer.bos_id,) and tokenizer.bos_id not in one.texts[1]
    two = build_pieces(tokenizer, "compare", 2)
    assert len(two.texts) == 3 and two.texts[1] == ()  # both images in front, in order, nothing between
    marked = build_pieces(tokenizer, "<ImageHere>left <ImageHere>right", 2)
    assert len(marked.texts) == 3 and marked.texts[1] and marked.texts[1][0] != tokenizer.bos_id
    end = tokenizer.token_id("[UNUSED_TOKEN_145]")
    assert end in tokenizer.stop_ids and tokenizer.eos_id in tokenizer.stop_ids
    assert tokenizer.decode([*tokenizer.encode("hello", bos=False), end]) == "hello"


def test_fused_qkv_split_follows_internlm2s_gqa_layout() -> None:
    heads, kv_heads, head_dim = 8, 2, 3
    groups = heads // kv_heads
    # each row says which (kv group, slot in group, dim) it is: slots 0..groups-1 are q, then k, then v
    rows = [(g, slot, d) for g in range(kv_heads) for slot in range(groups + 2) for d in range(head_dim)]
    fused = torch.tensor([[g * 100 + slot * 10 + d] for g, slot, d in rows], dtype=torch.float32)
    q, k, v = split_fused_qkv(fused, heads, kv_heads, head_dim)
    assert q.shape == (heads * head_dim, 1) and k.shape == v.shape == (kv_heads * head_dim, 1)
    for head in range(heads):  # query head h belongs to kv group h // groups, as transformers' repeat_kv assumes
        assert q[head * head_dim, 0] == (head // groups) * 100 + (head % groups) * 10
    assert [k[g * head_dim, 0].item() for g in range(kv_heads)] == [g * 100 + groups * 10 for g in range(kv_heads)]
    assert [v[g * head_dim, 0].item() for g in range(kv_heads)] == [g * 100 + (groups + 1) * 10 for g in range(kv_heads)]


def test_partial_lora_applies_only_at_masked_positions_of_the_masked_forward() -> None:
    positions = ImagePositions()
    layer = PartialLoRALinear(6, 4, True, 2, positions)
    torch.nn.init.normal_(layer.lora_b.weight)
    x = torch.randn(1, 5, 6)
    plain = torch.nn.functional.linear(x, layer.weight, layer.bias)
    mask = torch.tensor([[False, True, True, False, False]])
    with torch.no_grad():
        assert torch.equal(layer(x), plain)  # not armed: the plain linear, bit for bit
        with positions.armed(mask):
            masked = layer(x)
            step = x[:, :1]  # a decode step (another length) stays plain
            assert torch.equal(layer(step), torch.nn.functional.linear(step, layer.weight, layer.bias))
        assert torch.equal(masked[~mask], plain[~mask])
        assert torch.allclose(masked[mask], plain[mask] + layer.lora_b(layer.lora_a(x[mask])))
        assert not torch.allclose(masked[mask], plain[mask])


# -- against the real code ------------------------------------------------------------------------
@pytest.mark.parametrize("name", _case_ids())
def test_fixture_case_matches_the_real_code(name: str, loaded: tuple[XComposerModel, XComposerTokenizer]) -> None:
    fixture = _fixture()
    case = next(c for c in fixture["cases"] if c["name"] == name)
    model, tokenizer = loaded
    inputs = _inputs(tokenizer, case)
    assert [list(piece) for piece in inputs.pieces.texts if piece] == case["prompt_text_ids"]
    assert inputs.prompt_tokens == case["input_tokens"]
    assert sum(inputs.image_tokens) == case["image_tokens"]
    generation = fixture["generation"]
    ids, logits = answering.generate(model, inputs, set(tokenizer.stop_ids), first_logits=True, do_sample=False,
                                     num_beams=1, repetition_penalty=generation["repetition_penalty"],
                                     max_new_tokens=generation["max_new_tokens"])
    assert logits is not None
    expected = case["logits"]
    scale = max(abs(v) for v in expected["values"])
    got = logits[torch.tensor(expected["index"])]
    assert torch.allclose(got, torch.tensor(expected["values"]), rtol=0, atol=1e-4 * scale), (got, expected["values"])
    assert abs(logits.sum().item() - expected["sum"]) <= 1e-4 * expected["abs_sum"]
    assert abs(logits.abs().sum().item() - expected["abs_sum"]) <= 1e-4 * expected["abs_sum"]
    assert int(logits.argmax()) == expected["argmax"]
    assert ids[0].tolist() == case["greedy_ids"]
    assert tokenizer.decode(case["greedy_ids"]) == case["text"]


def test_fast_path_gives_the_real_codes_ids_with_the_lora_prefill(
        loaded: tuple[XComposerModel, XComposerTokenizer]) -> None:
    """The fast path's prefill is the model's own (LoRA at image positions; without it the first token
    differs on this model): its greedy ids are the real code's, as generate()'s are (the fixture test)."""
    fixture = _fixture()
    case = next(c for c in fixture["cases"] if c["name"] == "two_turns")  # image + history: the smallest prompt
    model, tokenizer = loaded
    decoder = XComposerFastDecoder(model, 2048, compile=False)
    try:
        fast = decoder.answer(_inputs(tokenizer, case), fixture["generation"]["max_new_tokens"],
                              fixture["generation"]["repetition_penalty"], set(tokenizer.stop_ids))
    finally:
        decoder.close()
    assert fast == case["greedy_ids"]
