"""The XComposer backend on Loupe's own implementation: through create_backend, the engine and the CLI on the
tiny published-layout folder (no remote code: the folder's decoy .py raises if imported), streaming, cancel,
bf16 .bin weights, and the plan's device map (published names) reaching every module of the 7B shape."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.backends import Backend, create_backend
from core.backends.xcomposer import XComposerBackend
from core.errors import ModelError, PreflightError
from core.models import model_source, preflight
from core.models.xcomposer import answering
from core.models.xcomposer.model import XComposerModel, _placement, load_model
from core.models.xcomposer.spec import read_spec
from core.models.xcomposer.tokenizer import XComposerTokenizer
from core.models.xcomposer_folder import build_xcomposer_folder, reference_images
from core.records import GenerationSettings, Query
from core.settings import load_settings
from tests.model_configs import xcomposer_folder
from tests.test_preflight import gpu

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def backend(xcomposer_tiny_dir: Path) -> XComposerBackend:
    chosen = create_backend(load_settings(model=str(xcomposer_tiny_dir)))
    assert isinstance(chosen, XComposerBackend) and isinstance(chosen, Backend)
    chosen.load()
    return chosen


def _text_query(question: str, max_new_tokens: int = 6) -> Query:
    return Query((), question, GenerationSettings(max_new_tokens=max_new_tokens))


def test_the_published_folder_loads_without_remote_code(backend: XComposerBackend) -> None:
    assert not [name for name in sys.modules if "internlm" in name.lower()]  # the decoy .py was never imported
    card = backend.describe()
    assert card.backend == "xcomposer" and card.device == "cpu" and card.dtype == "float32"
    assert backend.takes_history and backend.takes_video
    assert "fast decode: static KV cache" in " ".join(card.notes)


def test_a_question_streams_with_its_real_counts_and_stops_at_the_turn_end(backend: XComposerBackend) -> None:
    encoded = backend.encode(_text_query("What is in the image?"))
    assert encoded.image_tokens == 0 and encoded.prompt_tokens == encoded.inputs.pieces.text_tokens
    stream = backend.stream(encoded)
    pieces = list(stream)
    answer = stream.answer
    assert answer is not None and answer.input_tokens == encoded.prompt_tokens
    assert 1 <= answer.output_tokens <= 6 and "".join(pieces).strip() == answer.text or answer.truncated
    assert "[UNUSED_TOKEN_145]" not in answer.text and answer.timings.vision == 0.0


def test_earlier_turns_become_chat_turns(backend: XComposerBackend) -> None:
    from core.models.xcomposer.prompt import build_pieces
    from core.records import Turn

    query = Query((), "And now?", GenerationSettings(max_new_tokens=2), history=(Turn("What is in the image?", "A car."),))
    encoded = backend.encode(query)
    assert backend.tokenizer is not None
    expected = build_pieces(backend.tokenizer, "And now?", 0, (("What is in the image?", "A car."),))
    assert encoded.inputs.pieces == expected and encoded.prompt_tokens > backend.encode(_text_query("And now?")).prompt_tokens
    assert backend.stream(encoded).collect().input_tokens == encoded.prompt_tokens


def test_beam_search_answers_in_one_piece_and_sampling_streams(backend: XComposerBackend) -> None:
    beams = backend.stream(backend.encode(Query((), "What is in the image?", GenerationSettings(max_new_tokens=4,
                                                                                             num_beams=2))))
    assert len(list(beams)) == 1 and beams.answer is not None and beams.answer.timings.decode == 0.0
    sampled = backend.stream(backend.encode(Query((), "What is in the image?", GenerationSettings(
        max_new_tokens=4, do_sample=True, seed=1))))
    pieces = list(sampled)
    assert sampled.answer is not None and 1 <= sampled.answer.output_tokens <= 4 and pieces


def test_cancel_stops_the_answer_early(backend: XComposerBackend) -> None:
    stream = backend.stream(backend.encode(_text_query("Describe the image in detail.", max_new_tokens=200)))
    for _piece in stream:
        stream.cancel()
    answer = stream.answer
    assert answer is not None and answer.truncated and answer.output_tokens < 200


def test_generate_and_fast_path_answer_the_same(backend: XComposerBackend) -> None:
    query = _text_query("图中有什么？", max_new_tokens=8)
    fast = backend.stream(backend.encode(query)).collect()
    decoder, backend.fast_decoder = backend.fast_decoder, None
    try:
        plain = backend.stream(backend.encode(query)).collect()
    finally:
        backend.fast_decoder = decoder
    assert fast.text == plain.text and fast.output_tokens == plain.output_tokens


def test_a_batch_answers_as_each_prompt_alone(backend: XComposerBackend) -> None:
    queries = [_text_query("What is in the image?"), _text_query("图中有什么？请详细描述这张图片。")]
    batch = backend.answer_batch(queries)
    for query, (answer, ids) in zip(queries, batch):
        alone = backend.stream(backend.encode(query)).collect()
        assert answer.text == alone.text and len(ids) == alone.output_tokens == answer.output_tokens


def test_a_batch_about_one_image_runs_the_image_encoder_once(backend: XComposerBackend) -> None:
    from core.inputs import images

    picture = images.prepare(_png(reference_images()["small"]))  # the smallest reference image
    queries = [Query((picture,), q, GenerationSettings(max_new_tokens=2)) for q in ("What is in the image?", "图中有什么？")]
    assert backend.model is not None
    calls: list[int] = []
    hook = backend.model.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        batch = backend.answer_batch(queries)
    finally:
        hook.remove()
    assert calls == [1] and len(batch) == 2
    assert all(a.input_tokens == backend.encode(q).prompt_tokens and a.timings.vision > 0 for q, (a, _) in zip(queries, batch))


def _png(image: object) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # type: ignore[attr-defined]
    return buffer.getvalue()


def test_cli_ask_answers_about_an_image(xcomposer_tiny_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    reference_images()["small"].save(image)
    result = subprocess.run([sys.executable, "-m", "core", "ask", str(image), "图中有什么？", "--model",
                             str(xcomposer_tiny_dir), "--max-new-tokens", "3", "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout)
    assert answer["input_tokens"] == 841 + 17 and 1 <= answer["output_tokens"] <= 3  # 841 image tokens
    assert answer["timings_s"]["vision"] > 0 and "Traceback" not in result.stderr


def test_bf16_bin_weights_load_as_the_same_model(xcomposer_tiny_dir: Path, tmp_path: Path) -> None:
    folder = build_xcomposer_folder(tmp_path / "bin", dtype="bfloat16", weight_format="bin")
    tokenizer = XComposerTokenizer(folder)
    inputs = answering.encode(tokenizer, "What is in the image?", [])
    from_bin, _ = load_model(folder, dtype=torch.float32)
    reference, _ = load_model(xcomposer_tiny_dir, dtype=torch.float32)
    got, expected = answering.first_logits(from_bin, inputs), answering.first_logits(reference, inputs)
    assert torch.nn.functional.cosine_similarity(got, expected, dim=0) > 0.999  # bf16-rounded weights
    assert not torch.equal(got, expected)


def test_a_device_map_on_one_device_adds_no_device_hooks(xcomposer_tiny_dir: Path) -> None:
    """Hooks that move inputs between devices are for split decoders only (the fast path's compiled step
    calls the LM head: nothing extra may run there)."""
    from core.models.xcomposer.model import _PLACED

    one_device: dict[str, int | str] = {key: "cpu" for key in _PLACED} | {f"model.layers.{i}": "cpu" for i in range(2)}
    model, _ = load_model(xcomposer_tiny_dir, dtype=torch.float32, device_map=one_device)
    assert not model.decoder.lm_head._forward_pre_hooks
    assert not any(layer._forward_pre_hooks for layer in model.decoder.model.layers)


def test_the_plans_device_map_places_every_module_of_the_7b_shape(tmp_path: Path) -> None:
    folder = xcomposer_folder(tmp_path)
    clearance = preflight.check(folder, load_settings(model=str(folder)), gpus=(gpu(0, 22.2), gpu(1, 22.2)))
    config = json.loads((folder / "config.json").read_text())
    spec = read_spec(config, {f"vit.vision_tower.vision_model.encoder.layers.{i}.x" for i in range(24)})
    with torch.device("meta"):
        model = XComposerModel(spec)
    device_of = _placement(clearance.device_map, torch.device("cpu"))
    devices = {name: device_of(name) for name, _ in model.named_parameters()}
    first, last = torch.device("cuda:0"), torch.device("cuda:1")
    assert devices["decoder.model.embed_tokens.weight"] == devices["image_encoder.plora_glb_GN"] == first
    assert all(d == first for n, d in devices.items() if n.startswith("image_encoder."))
    assert devices["decoder.model.norm.weight"] == devices["decoder.lm_head.weight"] == last
    assert devices["decoder.model.layers.31.mlp.down_proj.lora_b.weight"] == last
    assert devices["decoder.model.layers.0.self_attn.q_proj.weight"] == first


def test_backend_xcomposer_on_a_native_model_says_what_it_is(demo_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="is a 'llava' model; use backend = 'auto'"):
        create_backend(load_settings(model=str(demo_model_dir), backend="xcomposer"))


def test_without_a_gpu_the_7b_shape_is_refused_by_the_preflight_check(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(PreflightError, match="too large for the CPU"):
        create_backend(load_settings(model=str(xcomposer_folder(tmp_path))))


def test_a_folder_without_weights_fails_cleanly(tmp_path: Path) -> None:
    folder = xcomposer_folder(tmp_path)
    chosen = load_settings(model=str(folder), device="cpu")
    clearance = preflight.Clearance("cpu", "float32", None, 0)
    broken = XComposerBackend(model_source.resolve(chosen), clearance)
    with pytest.raises(ModelError, match="could not be loaded"):
        broken.load()
    assert broken.model is None and broken.tokenizer is None
    with pytest.raises(ModelError, match="not loaded"):
        broken.stream(None)  # type: ignore[arg-type]
