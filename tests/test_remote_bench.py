"""CI runs the remote-concurrency benchmark (CPU only, a stand-in engine), so the script cannot rot and the
queue cannot silently fall back to one request at a time: 8 requests of 1.0 s each must overlap."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_remote_concurrency_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "remote_concurrency.json"
    done = subprocess.run([sys.executable, "bench/remote_concurrency.py", "--repeats", "2", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    # Exit 1 means the 1.3x limit was missed: on a CI machine shared with other jobs that can be CPU
    # contention, so the test holds the script to the weaker, timing-robust fact below instead.
    assert done.returncode in (0, 1), done.stderr[-2000:]
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["concurrent"] == 8 and record["one_s"] >= 1.0 and record["holds"] == (done.returncode == 0)
    # One at a time, 8 requests would take 8 s; in flight together they take about one.
    assert record["concurrent_s"] < 0.5 * record["one_at_a_time_would_take_s"]
    assert record["api"]["concurrent_s"] < 0.5 * record["one_at_a_time_would_take_s"]
