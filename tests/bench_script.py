"""Running a benchmark script as CI does: a subprocess from the repository root, its JSON read back."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str, *args: str, result_file: Path) -> dict:
    """`python bench/<script> <args>`; fails the test with its stderr tail unless it exits 0."""
    done = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(result_file.read_text(encoding="utf-8"))
