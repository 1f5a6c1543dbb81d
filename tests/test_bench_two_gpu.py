"""CI runs the two-GPU script's CPU mode, so the run that needs two cards cannot rot before it gets them."""
from pathlib import Path

from tests.bench_script import run_bench


def test_two_gpu_script_cpu_mode(tmp_path: Path) -> None:
    out = tmp_path / "two.json"
    record = run_bench("two_gpu.py", "--cpu", "--out", str(out), result_file=out)
    for key in ("device", "gpus", "plan_predicted_gb", "nvml_used_gb", "plan_error_pct", "identical_tokens",
                "decode_tok_s_1gpu", "decode_tok_s_2gpu", "ttft_s_1gpu", "ttft_s_2gpu"):
        assert key in record, key
    # The plan the GPU run will load: the reference deployment's even split over two 22.2 GB cards, vision first.
    cards = record["plan_for_two_cards"]["gpus"]
    assert [c["layers"] for c in cards] == [[0, 15], [16, 31]] and all(c["capacity_gb"] == 22.2 for c in cards)
    assert "model.vision_tower" in cards[0]["modules"] and "lm_head" in cards[1]["modules"]
    assert len(record["plan_predicted_gb"]) == 2 and 7 < min(record["plan_predicted_gb"])
    assert record["identical_tokens"] is True and record["decode_tok_s_1gpu"] > 0 and record["ttft_s_2gpu"] > 0
