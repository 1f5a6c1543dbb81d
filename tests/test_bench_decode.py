"""CI runs the decode benchmark's CPU mode on the demo model, so the GPU script cannot rot unnoticed."""
from pathlib import Path

from tests.bench_script import run_bench


def test_decode_benchmark_cpu_mode(tmp_path: Path) -> None:
    out = tmp_path / "decode.json"
    record = run_bench("decode_speed.py", "--cpu", "--out", str(out), result_file=out)
    assert record["teacher_forced_ok"] is True and record["teacher_forced_max_rel_diff"] < 1e-4
    # The demo model runs in float32 on the CPU: every path agrees with the fp32 truth almost exactly.
    assert record["within_noise_floor"] is True and record["fast_vs_fp32_max_rel_diff"] < 1e-4
    assert record["hf_paths_max_rel_diff"] < 1e-4
    profile = record["decode_profile"]
    assert profile["steps"] == 32 and profile["wall_ms_per_token"] > 0 and profile["cpu_op_ms_per_token"] > 0
    assert profile["top_ops"] and profile["cuda_graph_replays_per_token"] == 0  # no CUDA, no graphs
    for key in ("device", "plain_generate_tok_s", "decode_tok_s", "engine_decode_tok_s", "ttft_s", "batch4_over_single"):
        assert record[key], key
    assert len(record["ttft_new_lengths_s"]) == 3 and all(t > 0 for t in record["ttft_new_lengths_s"])
