"""`python -m core plan`: the JSON contract, the human table and the exit-2 refusal, run as real subprocesses."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.model_configs import xcomposer_folder

ROOT = Path(__file__).resolve().parent.parent


def _core(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", "plan", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_plan_json_for_two_cards_from_a_config_only_folder(tmp_path: Path) -> None:
    folder = xcomposer_folder(tmp_path)
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    result = _core(str(folder), "--gpu-memory", "22.2,22.2", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert {"gpus", "reserve_gb", "total_gb"} <= set(plan) and plan["device"] == "cuda" and plan["fits"]
    first, second = plan["gpus"]
    for gpu in plan["gpus"]:
        assert {"index", "layers", "modules", "predicted_gb", "capacity_gb"} <= set(gpu)
        assert gpu["capacity_gb"] == 22.2 and gpu["predicted_gb"] <= 22.2
    assert [first["index"], second["index"]] == [0, 1]
    assert first["layers"][0] == 0 and second["layers"] == [first["layers"][1] + 1, 31]
    assert "vit" in first["modules"] and "output" in second["modules"]
    assert plan["reserve_gb"] > 0 and abs(plan["total_gb"] - sum(g["predicted_gb"] for g in plan["gpus"])) < 0.05

    longer = json.loads(_core(str(folder), "--gpu-memory", "22.2,22.2", "--max-new-tokens", "4096", "--json").stdout)
    assert longer["reserve_gb"] > plan["reserve_gb"] and longer["workload"]["max_new_tokens"] == 4096


def test_plan_prints_per_gpu_modules_layers_and_gb(tmp_path: Path) -> None:
    result = _core(str(xcomposer_folder(tmp_path)), "--gpu-memory", "22.2,22.2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    gpu0 = next(line for line in lines if line.startswith("GPU0  layers 0-"))
    assert " of 22.2 GB  = weights " in gpu0 and "KV cache" in gpu0
    assert any(line.strip().startswith("+ vit, vision_proj") for line in lines)
    assert lines[-1].startswith("reserve ") and " GB, total " in lines[-1]


def test_a_plan_that_cannot_fit_exits_2_with_the_preflight_message(tmp_path: Path) -> None:
    result = _core(str(xcomposer_folder(tmp_path)), "--gpu-memory", "22.2", "--json")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: internlm-xcomposer2d5-7b needs "), result.stderr
    assert "GB in all" in lines[0] and "GPU0 has 22.2 GB; add a second GPU or lower the image size / max tokens" in lines[0]
    bad = _core(str(tmp_path), "--gpu-memory", "22.2,lots")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
