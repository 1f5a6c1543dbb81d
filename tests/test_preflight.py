"""The pre-flight check with memory figures given to it, the CPU fallback, load progress and clean failure."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.backends import create_backend
from core.errors import ConfigError, ModelError, PreflightError
from core.models import load_progress, preflight
from core.models.load_progress import LoadProgress
from core.serving.engine import load_engine
from core.settings import load_settings
from core.telemetry.snapshots import GpuSnapshot
from tests.model_configs import llava_7b_folder, xcomposer_folder

GB = 10**9
ROOT = Path(__file__).resolve().parent.parent


def gpu(index: int, free_gb: float, cc: tuple[int, int] | None = (8, 9), total_gb: float = 24.0) -> GpuSnapshot:
    return GpuSnapshot(index=index, name=f"card{index}", total_bytes=int(total_gb * GB),
                       used_bytes=int((total_gb - free_gb) * GB), free_bytes=int(free_gb * GB), compute_capability=cc)


def test_one_card_refusal_says_what_is_needed_and_what_is_there(tmp_path: Path) -> None:
    folder = xcomposer_folder(tmp_path)
    with pytest.raises(PreflightError) as refused:
        preflight.check(folder, load_settings(), gpus=(gpu(0, 22.2),))
    message = str(refused.value)
    assert message.startswith("internlm-xcomposer2d5-7b needs ")
    assert " GB in all (17.4 GB of weights + " in message
    assert "; GPU0 has 22.2 GB free; add a second GPU or lower the image size / max tokens" in message


def test_one_24_gb_card_clears_the_xcomposer_shape(tmp_path: Path) -> None:
    """22.6 GB predicted: no full-prompt logits (the remote code's 6.7 GB) and no eager-attention reserve."""
    clearance = preflight.check(xcomposer_folder(tmp_path), load_settings(), gpus=(gpu(0, 24.0),))
    assert clearance.device == "cuda" and [g.index for g in clearance.plan.gpus] == [0]
    assert round(clearance.plan.total_bytes / GB, 1) == 22.6
    assert not any("eager" in note or "flash-attn" in note for note in clearance.notes)


def test_two_cards_clear_the_xcomposer_shape_in_bf16(tmp_path: Path) -> None:
    clearance = preflight.check(xcomposer_folder(tmp_path), load_settings(), gpus=(gpu(0, 22.2), gpu(1, 22.2)))
    assert clearance.device == "cuda" and clearance.dtype == "bfloat16"
    assert [g.index for g in clearance.plan.gpus] == [0, 1]
    assert clearance.device_map["vit"] == 0 and clearance.device_map["output"] == 1
    assert clearance.summary.startswith("GPU0: layers 0-")


def test_without_bf16_the_check_falls_back_to_fp16_with_a_note(tmp_path: Path) -> None:
    clearance = preflight.check(xcomposer_folder(tmp_path), load_settings(), gpus=(gpu(0, 22.2, (7, 5)), gpu(1, 22.2, (7, 5))))
    assert clearance.dtype == "float16"
    assert any("bf16 needs compute capability 8.0+ (GPU0 has 7.5): using fp16" in n for n in clearance.notes)


def test_max_memory_caps_free_memory_and_is_named_in_the_refusal(tmp_path: Path) -> None:
    settings = load_settings(max_memory_gb="12")
    with pytest.raises(PreflightError, match=r"GPU0 may use 12.0 GB \(max_memory_gb\), GPU1 may use 12.0 GB"):
        preflight.check(xcomposer_folder(tmp_path), settings, gpus=(gpu(0, 80), gpu(1, 80)))
    capped = preflight.check(xcomposer_folder(tmp_path), load_settings(max_memory_gb="22.2,22.2"),
                             gpus=(gpu(0, 80), gpu(1, 80), gpu(2, 80)))
    assert [g.capacity_bytes for g in capped.plan.gpus] == [int(22.2 * GB)] * 2 and capped.plan.unused_gpus == ()
    with pytest.raises(ConfigError, match="lists 3 GPUs but 2 are visible"):
        preflight.check(xcomposer_folder(tmp_path), load_settings(max_memory_gb="20,20,20"), gpus=(gpu(0, 80), gpu(1, 80)))


def test_a_pinned_split_from_the_settings_is_validated(tmp_path: Path) -> None:
    cards = (gpu(0, 22.2), gpu(1, 22.2))
    pinned = preflight.check(xcomposer_folder(tmp_path), load_settings(split="0-15,16-31"), gpus=cards)
    assert [g.layers for g in pinned.plan.gpus] == [(0, 15), (16, 31)]
    assert "layer split pinned in the settings: 0-15,16-31" in pinned.notes
    with pytest.raises(ConfigError, match="on no GPU"):
        preflight.check(xcomposer_folder(tmp_path), load_settings(split="0-15,17-31"), gpus=cards)
    with pytest.raises(PreflightError, match="change the pinned split"):  # GPU1 would need 19.0 GB
        preflight.check(xcomposer_folder(tmp_path), load_settings(split="0-0,1-31"), gpus=(gpu(0, 22.2), gpu(1, 18.0)))


def test_cuda_visible_devices_renumbers_nvml_cards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    (only,) = preflight.visible_gpus((gpu(0, 1), gpu(1, 40)))
    assert (only.index, only.name, only.free_bytes) == (0, "card1", 40 * GB)  # CUDA calls NVML's GPU1 "0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert preflight.visible_gpus((gpu(0, 40),)) == ()


def test_without_a_gpu_the_demo_runs_on_the_cpu_and_a_7b_is_refused(demo_model_dir: Path, tmp_path: Path) -> None:
    clearance = preflight.check(demo_model_dir, load_settings(), gpus=())
    assert clearance.device == "cpu" and clearance.plan is None and "running on the CPU" in clearance.notes[0]
    with pytest.raises(PreflightError, match=r"No GPU is visible .* 8.1 B parameters .* too large for the CPU"):
        preflight.check(llava_7b_folder(tmp_path), load_settings(), gpus=())
    with pytest.raises(PreflightError, match="ask for a GPU"):
        preflight.check(demo_model_dir, load_settings(device="cuda"), gpus=())


def test_create_backend_runs_the_check_and_the_demo_loads_with_progress(demo_model_dir: Path) -> None:
    seen: list[tuple[LoadProgress, int]] = []
    settings = load_settings(model=str(demo_model_dir))
    engine = load_engine(settings, progress=lambda p: seen.append((p, threading.get_ident())))
    messages = [p.message for p, _ in seen]
    assert any(m.startswith("Reading 1 shard file (0.") for m in messages)
    assert any(m.startswith("Read 1 shard file in ") for m in messages) and messages[-1].startswith("Model ready")
    assert {ident for _, ident in seen} == {threading.get_ident()}  # reported in the caller's thread
    assert [p.fraction for p, _ in seen] == sorted(p.fraction for p, _ in seen)
    card = engine.describe()
    if card.device == "cpu":
        assert card.device_map_summary == "cpu"
    engine.backend.unload()


def test_a_failed_load_leaves_nothing_loaded(demo_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "config-only"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "processor_config.json",
                 "preprocessor_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (demo_model_dir / name).exists():
            shutil.copy(demo_model_dir / name, folder / name)
    backend = create_backend(load_settings(model=str(folder)))  # the check needs only the config
    with pytest.raises(ModelError, match="could not be loaded"):
        backend.load()
    assert backend.model is None and backend.processor is None


def test_run_watched_hands_the_worker_error_to_the_caller(tmp_path: Path) -> None:
    def boom() -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(RuntimeError, match="out of memory") as raised:
        load_progress.run_watched(boom, folder=tmp_path, plan=None, report=lambda _p: None)
    assert "everything loaded so far was freed" in load_progress.describe_failure(raised.value)


def test_placement_lines_read_like_the_load_log_users_know(tmp_path: Path) -> None:
    clearance = preflight.check(xcomposer_folder(tmp_path), load_settings(split="0-15,16-31"),
                                gpus=(gpu(0, 22.2), gpu(1, 22.2)))
    first, second = load_progress.placement_lines(clearance.plan)
    assert first.startswith("Loading layers 0-15 + vit, vision_proj, plora_glb_GN, plora_sub_GN, tok_embeddings to GPU0 ... ")
    assert second.startswith("Loading layers 16-31 + norm, output to GPU1 ... ") and second.endswith(" GB")


def test_gpu_load_check_cpu_mode_records_its_json(tmp_path: Path) -> None:
    out = tmp_path / "gpu_load_check.json"
    result = subprocess.run([sys.executable, "bench/gpu_load_check.py", "--cpu", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    record = json.loads(out.read_text())
    assert line["mode"] == record["mode"] == "cpu"
    assert "needs" in record["refusal"]["xcomposer_shape"] or "too large" in record["refusal"]["xcomposer_shape"]
    assert record["load"]["answer"]["output_tokens"] > 0 and record["load"]["load_s"] > 0
    assert record["load"]["progress"][-1].startswith("Model ready")


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_demo_is_planned_onto_gpu0(demo_model_dir: Path) -> None:
    clearance = preflight.check(demo_model_dir, load_settings())
    assert clearance.device == "cuda" and [g.index for g in clearance.plan.gpus] == [0]
    assert set(clearance.device_map.values()) == {0}


def test_the_model_being_replaced_counts_as_free(tmp_path: Path, engine) -> None:
    folder, cards = xcomposer_folder(tmp_path), (gpu(0, 8), gpu(1, 8))
    with pytest.raises(PreflightError, match="GPU0 has 8.0 GB free"):
        preflight.check(folder, load_settings(), gpus=cards)
    clearance = preflight.check(folder, load_settings(), gpus=cards, reclaim={0: 14 * GB, 1: 14 * GB})
    assert [g.capacity_bytes for g in clearance.plan.gpus] == [22 * GB, 22 * GB]
    held = preflight.memory_held(engine.backend)
    if engine.describe().device == "cpu":
        assert held == {}  # the demo's weights are on the CPU: nothing to give back
    else:
        assert set(held) == {0} and held[0] > 0


def test_trust_remote_code_is_accepted_but_only_noted(tmp_path: Path) -> None:
    """Old loupe.toml files that set trust_remote_code still load; Loupe runs no folder code, and says so."""
    cards = (gpu(0, 22.2), gpu(1, 22.2))
    noted = preflight.check(xcomposer_folder(tmp_path), load_settings(trust_remote_code=True), gpus=cards)
    assert preflight.REMOTE_CODE_NOTE in noted.notes and noted.plan is not None and noted.plan.fits
    assert preflight.REMOTE_CODE_NOTE.startswith("trust_remote_code is set but has no effect")
    plain = preflight.check(xcomposer_folder(tmp_path), load_settings(), gpus=cards)
    assert preflight.REMOTE_CODE_NOTE not in plain.notes
    assert noted.plan.device_map == plain.plan.device_map
