#!/usr/bin/env bash
# The GPU runs still owed to the issues, one device call each (each well inside the 10-minute limit).
# Run from the repository root on the lent machine; results land in bench/results/ and are copied to $OUT.
#   bash bench/gpu_pending.sh tests    # nvidia-h200: GPU tests (fast path, batching, real OOM, unload, NVML)
#   bash bench/gpu_pending.sh sweep    # nvidia-h200: bench/decode_compile_variants.py (projections, inductor options)
#     VARIANTS=a,b SWEEP_OUT=name.json bash bench/gpu_pending.sh sweep   # other variants, into another file
#     VARIANTS=own_all,fused SWEEP_OUT=decode_compile_variants_fused_cuda.json bash bench/gpu_pending.sh sweep
#       # whether to fold the small kernels into the GEMVs (core/models/fused_gemv.py; decode_gemv.PRODUCT_FUSED)
#   bash bench/gpu_pending.sh decode   # nvidia-h200: decode benchmark (7B-class), bf16 noise floor included
#   bash bench/gpu_pending.sh concurrency   # nvidia-h200: 8 answers at once through the engine, where the loop's time goes
#   bash bench/gpu_pending.sh compare  # nvidia-h200: where Compare's time goes (bench/compare_breakdown.py), attention splits
#   bash bench/gpu_pending.sh rows     # nvidia-h200: Loupe's rows GEMV (rows_gemv.py) swept, then the 8-row step with it vs cuBLAS
#   bash bench/gpu_pending.sh two      # nvidia-h200-x2: the two-card run (bench/two_gpu.py)
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT="${OUT:-/tmp/loupe-out}"; mkdir -p "$OUT"
python3 -c "import fastapi, streamlit" 2>/dev/null || echo "note: fastapi/streamlit missing here; tests needing them are not run"
case "${1:-}" in
  tests)
    # Issue #15 step 1: the GPU tests (the fast path with every attention, the folded GEMVs and two compiled
    # stages on one GPU, and continuous batching; a Qwen2.5-VL-shaped decoder's M-RoPE; a real CUDA OOM
    # on the fast path and on generate(), which writes bench/results/oom_recovery.json; unload back to the NVML
    # baseline; NVML readings). Two processes: a CUDA error (an illegal address) poisons the process it happens
    # in and every later test there. (The 7B load check of issue #16 is recorded in gpu_load_check.json.)
    rm -f bench/results/oom_recovery.json
    nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv 2>&1 | tee "$OUT/nvidia_smi_before.csv"
    timeout 420 python3 -m pytest -s -q -p no:cacheprovider -m gpu tests/test_fast_decode_gpu.py \
      tests/test_fast_decode_mrope_gpu.py 2>&1 | grep -v DEBUG \
      | tee "$OUT/gpu_tests.log"
    timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_oom_recovery_gpu.py tests/test_unload_gpu.py \
      tests/test_telemetry_gpu.py tests/test_preflight.py 2>&1 | grep -v DEBUG | tee -a "$OUT/gpu_tests.log"
    cp "$OUT/gpu_tests.log" bench/results/gpu_tests_cuda.log
    cp bench/results/oom_recovery*.json "$OUT/" 2>/dev/null
    echo "tests step done in $SECONDS s" ;;
  sweep)
    # The projections as reductions and FlexAttention's split (bench/decode_compile_variants.py); the inductor
    # options and the loop order were measured before (decode_compile_variants_cuda.json).
    timeout $((570 - SECONDS)) python3 bench/decode_compile_variants.py --budget-s $((550 - SECONDS)) \
      --variants "${VARIANTS:-cublas,lm_head,qkv_out_head,all,head_split16,all_cdt}" \
      --out "bench/results/${SWEEP_OUT:-decode_compile_variants_gemv_cuda.json}" 2>&1 | tail -8
    cp "bench/results/${SWEEP_OUT:-decode_compile_variants_gemv_cuda.json}" "$OUT/" 2>/dev/null
    echo "sweep done in $SECONDS s" ;;
  decode)
    # perf_hints: inductor says here if it skipped CUDA graphs for the decode step, and why.
    TORCH_LOGS=perf_hints timeout 560 python3 bench/decode_speed.py --model-dir /tmp/loupe-7b --other-attention 2>&1 \
      | tee "$OUT/decode.log" | tail -3
    cp bench/results/decode_speed_cuda.json "$OUT/" ;;
  concurrency)
    # bench/concurrent_decode.py alone on the 7B shape (8 rows, 256 tokens): the streams' stages and the batcher
    # loop's clock (admitting, waiting for the GPU, steps by width) say where the concurrent run's time goes.
    [ -f /tmp/loupe-7b/config.json ] || python3 -c "import sys; from pathlib import Path; sys.path.insert(0, 'bench')
from decode_speed import build_7b; build_7b(Path('/tmp/loupe-7b'))"
    timeout $((560 - SECONDS)) python3 bench/concurrent_decode.py --model /tmp/loupe-7b --rows 8 --tokens 256 2>&1 \
      | grep -v DEBUG | tail -2
    cp bench/results/concurrent_decode_cuda.json "$OUT/" ;;
  compare)
    timeout $((560 - SECONDS)) python3 bench/compare_breakdown.py 2>&1 | grep -v DEBUG | tail -2
    cp bench/results/compare_breakdown_cuda.json "$OUT/" ;;
  rows)
    # Whether the rows' step should take Loupe's GEMV (decode_gemv.PRODUCT_ROWS_GEMV): its blocks swept at 8 rows,
    # then the step at 1 and 8 rows, cuBLAS against it, in one run (same machine, same model).
    timeout 170 python3 bench/gemv_sweep.py --rows 8 --budget-s 140 --out bench/results/gemv_sweep_rows8_cuda.json \
      2>&1 | grep -v DEBUG | tail -8
    timeout $((570 - SECONDS)) python3 bench/decode_rows.py --attentions split --rows-gemv cublas,triton \
      --out bench/results/decode_rows_gemv_cuda.json 2>&1 | grep -v DEBUG | tail -3
    cp bench/results/gemv_sweep_rows8_cuda.json bench/results/decode_rows_gemv_cuda.json "$OUT/" ;;
  two)
    nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv
    python3 bench/two_gpu.py --workdir /tmp 2>&1 | tail -3
    cp bench/results/two_gpu_* "$OUT/" ;;
  *) echo "usage: bash bench/gpu_pending.sh tests|sweep|decode|concurrency|compare|rows|two" >&2; exit 2 ;;
esac
