"""CI runs the XComposer GPU benchmark on the CPU with the tiny folder, so the GPU script cannot rot unnoticed."""
from pathlib import Path

from tests.bench_script import run_bench


def test_xcomposer_benchmark_cpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "xcomposer.json"
    record = run_bench("xcomposer_cuda.py", "--preset", "tiny", "--device", "cpu", "--tokens", "4", "--repeats", "1",
                       "--small-image", "--model-dir", str(tmp_path / "tiny"), "--out", str(out), result_file=out)
    assert record["errors"] == {}, record["errors"]
    assert record["device"] == "cpu" and record["backend"] == "xcomposer" and record["dtype"] == "float32"
    assert record["image_tokens"] == 841  # 320×200: one 560-px crop + the global view, (1·1+1)·400 + 1 + 2·20
    assert record["plan"]["two_cards_22_2_gb"]["gpus"]
    assert record["answer_output_tokens"] == 4 and record["answer_s_250_tokens"] > 0
    for key in ("load_s", "ttft_s", "decode_tok_s", "plain_generate_tok_s", "bytes_per_token_GB"):
        assert record[key] > 0, key
    assert record["anchor_real_code"]["answer_s_250_tokens"] == 21.13
