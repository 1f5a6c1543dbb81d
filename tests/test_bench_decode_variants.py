"""CI runs the CPU modes of the decode benchmarks that otherwise run only on the GPU machine, so they cannot rot:
the compile-variant sweep and 'many answers at once' through the engine's continuous batching."""
from pathlib import Path

from tests.bench_script import run_bench


def test_compile_variant_sweep_cpu_mode(tmp_path: Path) -> None:
    out = tmp_path / "variants.json"
    record = run_bench("decode_compile_variants.py", "--cpu", "--out", str(out), result_file=out)
    variants = record["variants"]
    assert list(variants) == ["cublas", "no_ahead", "own_qkv_out", "own_qkv", "own_out", "own_mlp", "own_all",
                              "fused", "lm_head", "qkv_out_head", "all", "head_split16", "all_cdt", "cdt", "head_cdt",
                              "qkv_out_head_cdt", "pdl_cdt", "autotune"]
    for name, entry in variants.items():
        assert "error" not in entry, (name, entry)
        # Every variant answers alike: the projections written as float32 sums included (decode_gemv.py).
        assert entry["decode_tok_s"] > 0 and entry["same_tokens_as_base"] is True, name
    assert variants["cublas"]["read_ahead"] is True and variants["no_ahead"]["read_ahead"] is False
    every = {"qkv": "reduction", "out": "reduction", "mlp": "reduction", "lm_head": "reduction"}
    assert variants["all"]["gemv"] == every and variants["cublas"]["gemv"] == {}
    assert variants["own_mlp"]["gemv"] == {}  # Loupe's Triton GEMV runs on a GPU only (or under the interpreter)
    assert variants["fused"]["fused"] is False  # and so do the folded GEMVs (fused_gemv.py)
    assert record["best"] in variants


def test_concurrent_answers_cpu_mode(tmp_path: Path) -> None:
    out = tmp_path / "concurrent.json"
    record = run_bench("concurrent_decode.py", "--rows", "3", "--tokens", "12", "--out", str(out), result_file=out)
    assert record["all_answered"] is True and record["concurrent"] == 3 and record["rows"] == 3
    assert len(record["stream_decode_tok_s"]) == 3 and record["most_rows_at_once"] >= 2
    assert record["concurrent3_throughput_over_single"] > 0 and record["concurrent3_min_stream_over_alone"] > 0
    loop = record["batcher_loop"]  # where the batcher loop's time went during the concurrent run
    assert loop["running_s"] >= loop["admitting_s"] + loop["waiting_for_gpu_s"] and loop["admitting_s"] > 0
    assert sum(loop["steps_by_width"].values()) >= 11 and len(record["stream_stages_s"]) == 3
