"""bench/history_page.py stays runnable: a small run writes the JSON the committed result has."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_history_page_bench_small_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("history_page_bench", ROOT / "bench" / "history_page.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "history_page.json"
    monkeypatch.setattr(sys, "argv", ["history_page.py", "--rows", "120", "--repeats", "1", "--out", str(out)])
    assert bench.main() == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    (size,) = report["sizes"]
    assert size["rows"] == 120 and report["device"] == "cpu"
    for key in ("sql_median_s", "unfiltered_median_s", "session_filter_median_s", "text_filter_median_s"):
        assert 0 < size[key] < 60
    committed = json.loads((ROOT / "bench" / "results" / "history_page.json").read_text(encoding="utf-8"))
    assert [s["rows"] for s in committed["sizes"]] == [1000, 100000] and set(size) == set(committed["sizes"][0])
