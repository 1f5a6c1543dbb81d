"""The sampler, its ring buffer and its readouts, on this machine's real NVML (or its real absence)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import FrozenInstanceError

import pytest

from core.errors import ConfigError
from core.telemetry import nvml, readout, sampler
from core.telemetry.ring import Ring
from core.telemetry.snapshots import GpuSnapshot, TelemetrySample


def _gpu(index: int, used_gb: float, total_gb: float = 22.2, **fields: object) -> GpuSnapshot:
    values = dict(process_bytes=None, utilization_pct=None, temperature_c=None, power_w=None)
    values.update(fields)
    return GpuSnapshot(index=index, name="NVIDIA GeForce RTX 4090 D", used_bytes=int(used_gb * 1e9),
                       total_bytes=int(total_gb * 1e9), **values)  # type: ignore[arg-type]


def _wait_for(condition, timeout_s: float = 10.0) -> bool:
    """Poll until the background thread has done its part (a deadline, not a sleep that makes it pass)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_ring_keeps_the_newest_in_order() -> None:
    ring: Ring[int] = Ring(3)
    assert ring.latest() is None and ring.items() == ()
    for n in range(5):
        ring.append(n)
    assert ring.items() == (2, 3, 4) and ring.latest() == 4 and len(ring) == 3 == ring.capacity
    assert ring.since(3, key=float) == (3, 4)
    assert ring.since(9, key=float) == ()
    copy = ring.items()
    ring.append(5)
    assert copy == (2, 3, 4)  # a reader's copy does not move under it
    with pytest.raises(ValueError):
        Ring(0)


def test_ring_survives_concurrent_appends_and_reads() -> None:
    ring: Ring[int] = Ring(50)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            ring.append(n)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(2000):
            items = ring.items()
            assert list(items) == sorted(items) and len(items) <= 50
    finally:
        stop.set()
        thread.join()


def test_snapshots_are_frozen_and_typed() -> None:
    sample = sampler.read_sample()
    assert isinstance(sample, TelemetrySample)
    assert sample.process_rss_bytes > 10_000_000  # a Python process with psutil loaded: well over 10 MB
    assert sample.process_cpu_pct is None  # one reading has no baseline to compute CPU use from
    assert abs(sample.time - time.time()) < 60
    with pytest.raises(FrozenInstanceError):
        sample.time = 0  # type: ignore[misc]
    for gpu in sample.gpus:
        assert isinstance(gpu, GpuSnapshot)
        with pytest.raises(FrozenInstanceError):
            gpu.used_bytes = 0  # type: ignore[misc]


def test_second_reading_has_cpu_use() -> None:
    reader = sampler.SampleReader()
    reader.read()
    sum(range(200_000))  # some CPU work between the two readings
    assert reader.read().process_cpu_pct is not None


def test_no_gpu_path_reads_the_process_and_logs_once(monkeypatch, caplog) -> None:
    """Without a driver (real on CI; forced on a GPU machine) samples carry RSS and CPU, never an exception."""
    if nvml.state() == "ok":
        monkeypatch.setattr(nvml, "_state", "no NVIDIA driver (libnvidia-ml not found)")
    caplog.set_level(logging.INFO, logger="loupe.telemetry")
    s = sampler.Sampler(interval_s=0.01, window_s=1.0)
    try:
        s.start()
        assert _wait_for(lambda: len(s.ring) >= 5)
    finally:
        s.stop()
    assert s.state.startswith(("no ", "NVIDIA", "NVML"))
    assert all(sample.gpus == () and sample.process_rss_bytes > 0 for sample in s.samples())
    assert s.error is None
    messages = [r.getMessage() for r in caplog.records if r.name == "loupe.telemetry"]
    assert len(messages) == 1 and "no GPU reading" in messages[0]
    latest = s.latest()
    assert readout.status_line(latest).startswith("CPU: RSS ")
    assert readout.gpus_json(latest, s.state)["gpus"] == []


def test_sampler_thread_fills_a_bounded_window_and_stops() -> None:
    s = sampler.Sampler(interval_s=0.01, window_s=0.05)
    assert s.ring.capacity == 5
    assert s.start().running and len(s.ring) == 1  # the first sample is taken before start() returns
    first = s.ring.items()[0]
    try:
        assert _wait_for(lambda: len(s.ring) == 5 and s.ring.items()[0] is not first)  # oldest dropped
        times = [x.time for x in s.samples()]
        assert times == sorted(times)
        assert s.samples(last_s=3600) == s.samples()
        assert s.cpu_seconds >= 0
    finally:
        s.stop()
    assert not s.running


def test_bad_intervals_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="sample_interval_s"):
        sampler.Sampler(interval_s=0)
    with pytest.raises(ConfigError, match="sample_window_s"):
        sampler.Sampler(interval_s=1, window_s=0.5)


def test_one_shared_sampler_per_process(monkeypatch) -> None:
    monkeypatch.setenv("LOUPE_SAMPLE_INTERVAL_S", "0.25")
    monkeypatch.setenv("LOUPE_SAMPLE_WINDOW_S", "60")
    found: list[sampler.Sampler] = []
    threads = [threading.Thread(target=lambda: found.append(sampler.get_sampler())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in found}) == 1 and found[0].running
    assert sampler.get_sampler() is found[0]
    assert found[0].ring.capacity == max(1, int(found[0].window_s / found[0].interval_s))


def test_status_line_is_the_line_analysts_know() -> None:
    sample = TelemetrySample(time=time.time(), gpus=(_gpu(0, 15.2), _gpu(1, 8.5)), process_rss_bytes=400_000_000,
                             process_cpu_pct=None)
    assert readout.status_line(sample) == "GPU0: 15.2GB/22.2GB | GPU1: 8.5GB/22.2GB"
    no_gpu = TelemetrySample(time=time.time(), gpus=(), process_rss_bytes=2_400_000_000, process_cpu_pct=12.4)
    assert readout.status_line(no_gpu) == "CPU: RSS 2.4 GB | 12% CPU"
    unreadable = GpuSnapshot(0, "GPU0", None, None, None, None, None, None)
    assert readout.status_line(TelemetrySample(time.time(), (unreadable,), 1, None)) == "GPU0: no reading"
    assert readout.status_line(None) == "telemetry: no sample yet"


def test_gpus_json_and_csv_rows() -> None:
    sample = TelemetrySample(time=time.time(), gpus=(_gpu(0, 15.2, process_bytes=14_100_000_000, temperature_c=61),
                                                     GpuSnapshot(1, "x", None, None, None, None, None, None)),
                             process_rss_bytes=400_000_000, process_cpu_pct=3.0)
    record = readout.gpus_json(sample, "ok")
    assert record["state"] == "ok" and record["process_rss_gb"] == 0.4
    first, second = record["gpus"]
    assert {"index", "name", "used_gb", "total_gb", "state"} <= set(first)
    assert (first["used_gb"], first["total_gb"], first["state"], first["process_gb"]) == (15.2, 22.2, "ok", 14.1)
    assert second["used_gb"] is None and second["state"] != "ok"
    rows = readout.rows([sample, sample])
    assert len(rows) == 4 and all(tuple(r) == readout.CSV_COLUMNS for r in rows)
    assert rows[0]["gpu"] == 0 and rows[0]["temperature_c"] == 61 and rows[1]["gpu"] == 1
    no_gpu_rows = readout.rows([TelemetrySample(time.time(), (), 1_000_000_000, None)])
    assert len(no_gpu_rows) == 1 and no_gpu_rows[0]["gpu"] is None and no_gpu_rows[0]["process_rss_gb"] == 1.0
