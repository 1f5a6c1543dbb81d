"""The overhead benchmark runs end to end on the CPU with the demo model (tiny settings) and writes its JSON."""
from __future__ import annotations

from pathlib import Path

from tests.bench_script import run_bench


def test_overhead_benchmark_writes_the_promised_keys(tmp_path: Path) -> None:
    record = run_bench("telemetry_overhead.py", "--device", "cpu", "--tokens", "6", "--rounds", "1", "--idle-s", "1",
                       "--sample-reps", "20", "--out", str(tmp_path), result_file=tmp_path / "telemetry_overhead_cpu.json")
    assert {"device", "sample_us_per_gpu", "sampler_cpu_pct", "decode_tok_s_sampler_on",
            "decode_tok_s_sampler_off"} <= set(record)
    assert record["device"] == "cpu" and record["sample_us"] > 0 and record["sampler_cpu_pct"] >= 0
    assert record["decode_tok_s_sampler_on"] > 0 and record["decode_tok_s_sampler_off"] > 0
    assert [r["sampler"] for r in record["runs"]] == [False, True]
    assert all(r["output_tokens"] == 6 for r in record["runs"])  # end-of-sequence off: every run decodes all
