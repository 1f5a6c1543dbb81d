"""`python -m core gpus [--json]`: one reading, exit 0 with or without a GPU, the JSON keys as promised."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core.__main__ import main
from core.telemetry import gpu_reader, nvml

ROOT = Path(__file__).resolve().parent.parent


def test_gpus_json_contract_as_a_real_subprocess() -> None:
    result = subprocess.run([sys.executable, "-m", "core", "gpus", "--json"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert {"state", "gpus", "process_rss_gb"} <= set(record)
    assert record["process_rss_gb"] > 0
    if record["state"] != "ok":
        assert record["gpus"] == [] and record["state"] == nvml.state()
    for gpu in record["gpus"]:
        assert {"index", "name", "used_gb", "total_gb", "state"} <= set(gpu)
        assert gpu["state"] == "ok" and 0 < gpu["used_gb"] <= gpu["total_gb"]


def test_gpus_text_names_every_card_or_says_why_not(capsys) -> None:
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    assert "process RSS" in out
    if nvml.state() == "ok":
        assert all(f"GPU{gpu.index} " in out for gpu in gpu_reader.read_gpus())
    else:
        assert out.startswith(f"no GPU reading: {nvml.state()}")


def test_gpus_json_in_process(capsys) -> None:
    assert main(["gpus", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["state"] == nvml.state() and len(record["gpus"]) == len(gpu_reader.read_gpus())
