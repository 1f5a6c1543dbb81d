"""Real NVML values on a real GPU (skipped without one). Run with -s to record what it read."""
from __future__ import annotations

import json

import pytest
import torch

from core.records import GenerationSettings
from core.serving import admission
from core.telemetry import gpu_reader, markers, nvml, readout
from core.telemetry.sampler import Sampler, SampleReader

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_nvml_reads_every_card() -> None:
    assert nvml.state() == "ok"
    reader = SampleReader()
    reader.read()
    sample = reader.read()
    assert len(sample.gpus) >= torch.cuda.device_count() >= 1
    for gpu in sample.gpus:
        assert gpu.name and 0 < gpu.used_bytes <= gpu.total_bytes
        assert gpu.utilization_pct is None or 0 <= gpu.utilization_pct <= 100
        assert gpu.temperature_c is None or 10 <= gpu.temperature_c <= 110
        assert gpu.power_w is None or 5 <= gpu.power_w <= 1500
    print("\n" + readout.status_line(sample))
    print(json.dumps(readout.gpus_json(sample, nvml.state()), ensure_ascii=False))


def test_allocator_and_process_share_follow_a_real_allocation() -> None:
    block = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda:0")  # 0.54 GB
    torch.cuda.synchronize()
    try:
        sample = SampleReader().read()
        mine = [g for g in sample.gpus if g.allocated_bytes is not None]
        assert mine, "torch has CUDA up: its allocator figures must be matched to an NVML card by UUID"
        card = next(g for g in mine if g.allocated_bytes >= block.numel())
        assert card.reserved_bytes >= card.allocated_bytes and card.peak_bytes >= card.allocated_bytes
        # NVML's own figure for this PID (None inside a container, where NVML lists host PIDs).
        assert card.process_bytes is None or card.process_bytes >= block.numel()
        assert card.used_bytes >= block.numel()
        print(f"\nGPU{card.index}: allocated {card.allocated_bytes / 1e9:.2f} GB, reserved "
              f"{card.reserved_bytes / 1e9:.2f} GB, this process (NVML) "
              f"{'n/a' if card.process_bytes is None else f'{card.process_bytes / 1e9:.2f} GB'}")
    finally:
        del block
        torch.cuda.empty_cache()


def test_one_reader_numbers_a_card_both_ways_and_admission_reads_it() -> None:
    block = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda:0")
    torch.cuda.synchronize()
    try:
        cuda0 = gpu_reader.read_cuda()[0]
        assert cuda0.index == cuda0.cuda_index == 0 and cuda0.allocated_bytes >= block.numel()
        assert 0 < cuda0.free_bytes <= cuda0.total_bytes and cuda0.reserved_bytes >= cuda0.allocated_bytes
        card = next(g for g in gpu_reader.read_gpus() if g.cuda_index == 0)  # the same card through NVML
        assert card.allocated_bytes == cuda0.allocated_bytes and card.free_bytes is not None
        usable = admission.free_bytes()["cuda:0"]
        assert 0 < usable <= cuda0.free_bytes + cuda0.reserved_bytes - cuda0.allocated_bytes + 2**30
        capped = admission.free_bytes("0.5")["cuda:0"]
        assert capped <= max(0.0, 0.5e9 - cuda0.allocated_bytes) + 2**20  # the budget caps what it offers
    finally:
        del block
        torch.cuda.empty_cache()


def test_stage_peaks_on_the_gpu(engine) -> None:
    """The demo model on CUDA: every generation stage has a cuda:0 peak, and the answer carries the maximum."""
    sampler = Sampler(interval_s=0.05, window_s=60).start()
    try:
        from PIL import Image

        from tests.image_factory import encode

        image = encode(Image.new("RGB", (640, 480), "navy"), "PNG")
        query = engine.build_query([image], "What is this?", GenerationSettings(max_new_tokens=32))
        answer = engine.backend.stream(engine.backend.encode(query)).collect()
    finally:
        sampler.stop()
    trace = markers.for_query(query)
    assert [s.stage for s in trace.stages] == list(markers.STAGES)
    device = next(k for k in answer.peak_memory_gb if k.startswith("cuda:"))
    peaks = [s.peak_memory_gb[device] for s in trace.stages[1:]]
    assert min(peaks) > 0 and answer.peak_memory_gb[device] == pytest.approx(max(peaks))
    assert any(g.allocated_bytes for s in sampler.samples() for g in s.gpus)
    for stage in trace.stages:
        print(f"\n{stage.stage:10s} {stage.end - stage.start:7.4f} s  {stage.peak_memory_gb}", end="")
