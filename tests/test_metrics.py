"""Prometheus metrics (`loupe_*`): the API's /metrics after real answers on the demo model, parsed with
prometheus_client's own text parser; the GPU series from real GpuSnapshot records; the dashboard's opt-in port."""
from __future__ import annotations

import base64
import socket

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from core.errors import ConfigError
from core.serving import metrics
from core.settings import load_settings
from core.telemetry import nvml
from core.telemetry.snapshots import GpuSnapshot, TelemetrySample
from tests.image_factory import encode
from tests.test_scheduler import SHORT, Gate, _png

GB = 10**9


def _body(max_tokens: int = 8) -> dict:
    data = base64.b64encode(encode(Image.new("RGB", (120, 90), "teal"), "PNG")).decode()
    return {"max_tokens": max_tokens, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in the image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]}]}


def _parse(text: str) -> dict[str, list]:
    """Family name → its samples."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(families: dict[str, list], sample_name: str, **labels: str) -> float:
    family = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    found = [s.value for s in families[family] if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (sample_name, labels, families.get(family))
    return found[0]


def test_metrics_after_one_real_answer(serving) -> None:
    app, _scheduler = serving()
    client = TestClient(app)
    assert client.post("/v1/chat/completions", json=_body()).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = _parse(response.text)
    assert all(name.startswith("loupe_") for name in families)
    assert _value(families, "loupe_answers_total", status="done") == 1
    assert _value(families, "loupe_answers_total", status="failed") == 0
    assert _value(families, "loupe_queue_waiting") == 0 and _value(families, "loupe_requests_in_flight") == 0
    for histogram in ("loupe_time_to_first_token_seconds", "loupe_tokens_per_second", "loupe_queue_wait_seconds"):
        assert _value(families, f"{histogram}_count") == 1, histogram
    ttft = _value(families, "loupe_time_to_first_token_seconds_sum")
    assert 0 < ttft < 30
    assert 1 < _value(families, "loupe_tokens_per_second_sum") < 100_000  # 7 decoded tokens over a few ms
    assert 0 <= _value(families, "loupe_queue_wait_seconds_sum") < 5
    assert _value(families, "loupe_process_resident_memory_bytes") > 50 * 2**20  # torch and the model are loaded
    gpu_series = [name for name in families if name.startswith("loupe_gpu_")]
    if nvml.state() != "ok":
        assert gpu_series == []  # absent, not zero, without a GPU
    else:
        assert {s.labels["uuid"][:4] for s in families["loupe_gpu_memory_total_bytes"]} <= {"GPU-", "MIG-"}


def test_queue_and_in_flight_while_one_answer_runs(engine, serving) -> None:
    app, scheduler = serving()
    client = TestClient(app)
    gate = Gate(engine)
    try:
        first = scheduler.submit(engine.build_query([_png()], "first?", SHORT), session="a")
        assert gate.entered.wait(30)
        second = scheduler.submit(engine.build_query([_png()], "second?", SHORT), session="b")
        families = _parse(client.get("/metrics").text)
        assert _value(families, "loupe_requests_in_flight") == 1 and _value(families, "loupe_queue_waiting") == 1
        second.cancel()
    finally:
        gate.open()
    first.collect()
    families = _parse(client.get("/metrics").text)
    assert _value(families, "loupe_answers_total", status="done") == 1
    assert _value(families, "loupe_answers_total", status="cancelled") == 1
    assert _value(families, "loupe_queue_wait_seconds_count") == 1  # the one cancelled in the queue never started
    assert _value(families, "loupe_requests_in_flight") == 0


def test_metrics_obey_the_api_token(serving) -> None:
    app, _ = serving(api_token="s3cret")
    client = TestClient(app)
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200  # load-balancer probes stay open


def test_gpu_series_come_from_the_sample() -> None:
    sample = TelemetrySample(time=0.0, process_rss_bytes=123, process_cpu_pct=None, gpus=(
        GpuSnapshot(0, "NVIDIA H200", used_bytes=30 * GB, total_bytes=140 * GB, process_bytes=12 * GB, utilization_pct=87,
                    uuid="GPU-aaaa"),
        GpuSnapshot(1, "NVIDIA H200", used_bytes=None, total_bytes=None, process_bytes=None, utilization_pct=None,
                    uuid="GPU-bbbb"),
    ))
    families = _parse(metrics.LoupeMetrics(schedulers=list, sample=lambda: sample).text().decode())
    card = {"gpu": "0", "uuid": "GPU-aaaa", "name": "NVIDIA H200"}
    assert _value(families, "loupe_gpu_memory_used_bytes", **card) == 30 * GB
    assert _value(families, "loupe_gpu_memory_total_bytes", **card) == 140 * GB
    assert _value(families, "loupe_gpu_process_memory_bytes", **card) == 12 * GB
    assert _value(families, "loupe_gpu_utilization_percent", **card) == 87
    for family in ("loupe_gpu_memory_used_bytes", "loupe_gpu_process_memory_bytes", "loupe_gpu_utilization_percent"):
        assert [s.labels["gpu"] for s in families[family]] == ["0"]  # GPU1 could not be read: absent, not 0
    assert _value(families, "loupe_queue_waiting") == 0  # no scheduler yet: the queue is empty


def test_no_gpu_means_no_gpu_series() -> None:
    sample = TelemetrySample(time=0.0, gpus=(), process_rss_bytes=5, process_cpu_pct=None)
    families = _parse(metrics.LoupeMetrics(schedulers=list, sample=lambda: sample).text().decode())
    assert not [name for name in families if name.startswith("loupe_gpu_")]
    assert _value(families, "loupe_process_resident_memory_bytes") == 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dashboard_process_exports_on_its_own_port_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert metrics.export_metrics(load_settings()) is None  # off by default
    port = _free_port()
    monkeypatch.setenv("LOUPE_METRICS_PORT", str(port))
    settings = load_settings()
    assert settings.metrics_port == port
    url = metrics.export_metrics(settings)
    assert url == f"http://127.0.0.1:{port}/metrics"
    assert metrics.export_metrics(settings) == url  # once per process
    families = _parse(httpx.get(url, timeout=10).text)
    assert "loupe_queue_waiting" in families and "loupe_answers" in families


@pytest.mark.parametrize("value", ["-1", "65536", "http", "8.5"])
def test_metrics_port_is_checked(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LOUPE_METRICS_PORT", value)
    with pytest.raises(ConfigError, match="metrics_port"):
        load_settings()


def test_a_real_server_answers_curl(serving) -> None:
    """Over HTTP, as Prometheus and curl see it: a real uvicorn server, one streamed answer, then /metrics."""
    from core.serving.api import start_server

    app, _ = serving()
    server = start_server(app)
    try:
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={**_body(), "stream": True}, timeout=60) as r:
            assert r.status_code == 200 and "data: [DONE]" in list(r.iter_lines())
        scraped = httpx.get(f"{server.url}/metrics", timeout=10)
    finally:
        server.stop()
    families = _parse(scraped.text)
    assert _value(families, "loupe_answers_total", status="done") == 1
    assert _value(families, "loupe_time_to_first_token_seconds_count") == 1
