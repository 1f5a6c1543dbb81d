"""CI runs the CPU modes of the decode benchmarks that otherwise run only on the GPU machine, so they cannot rot:
the compile-variant sweep and 'many answers at once' through the engine's continuous batching."""
from pathlib import Path

from tests.bench_script import run_bench


def test_compile_variant_sweep_cpu_mode(tmp_path: Path) -> None:
    out = tmp_path / "variants.json"
    record = run_bench("decode_compile_variants.py", "--cpu", "--out", str(out), result_file=out)
    variants = record["variants"]
    assert list(variants) == ["cublas", "no_ahead", "lm_head", "qkv_out_head", "all", "head_split16", "all_cdt",
                              "cdt", "head_cdt", "qkv_out_head_cdt", "pdl_cdt", "autotune"]
    for name, entry in variants.items():
        assert "error" not in entry, (name, entry)
        # Every variant answers alike: the projections written as float32 sums included (decode_gemv.py).
        assert entry["decode_tok_s"] > 0 and entry["same_tokens_as_base"] is True, name
    assert variants["cublas"]["read_ahead"] is True and variants["no_ahead"]["read_ahead"] is False
    assert variants["all"]["reductions"] == ["qkv", "out", "mlp", "lm_head"] and variants["cublas"]["reductions"] == []
    assert record["best"] in variants


def test_concurrent_answers_cpu_mode(tmp_path: Path) -> None:
    out = tmp_path / "concurrent.json"
    record = run_bench("concurrent_decode.py", "--rows", "3", "--tokens", "12", "--out", str(out), result_file=out)
    assert record["all_answered"] is True and record["concurrent"] == 3 and record["rows"] == 3
    assert len(record["stream_decode_tok_s"]) == 3 and record["most_rows_at_once"] >= 2
    assert record["concurrent3_throughput_over_single"] > 0 and record["concurrent3_min_stream_over_alone"] > 0
