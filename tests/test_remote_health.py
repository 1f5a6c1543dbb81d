"""Loupe's API in front of a remote engine: /health and the model card report the engine (reachable, what it
serves) instead of this machine's GPUs, which have nothing to do with the model."""
from __future__ import annotations

from fastapi.testclient import TestClient

from core.serving.api import create_app
from core.serving.engine import load_engine
from core.serving.scheduler import close_scheduler_for
from core.settings import load_settings
from tests.remote_replay import ReplayServer, load_fixture


def test_health_and_model_card_report_the_remote_engine(tmp_path) -> None:
    server = ReplayServer(load_fixture("lmdeploy")).start()
    engine = load_engine(load_settings(backend="openai", openai_base_url=server.base_url, home=tmp_path))
    try:
        client = TestClient(create_app(engine, record_history=False))
        health = client.get("/health")
        body = health.json()
        assert health.status_code == 200 and body["status"] == "ok" and body["backend"] == "openai"
        assert body["gpus"] == [] and "nvml" not in body  # no local GPU is read for a remote model
        remote = body["remote"]
        assert (remote["base_url"], remote["reachable"], remote["model"]) == (
            server.base_url, True, "internlm-xcomposer2d5-7b")
        assert remote["served"] == ["internlm-xcomposer2d5-7b"] and remote["model_listed"] is True
        card = client.get("/v1/models").json()["data"][0]
        assert card["id"] == "internlm-xcomposer2d5-7b"
        assert card["loupe"]["remote"] == {"base_url": server.base_url, "served": ["internlm-xcomposer2d5-7b"]}

        server.stop()
        down = client.get("/health")
        assert down.status_code == 503 and down.json()["status"] == "remote unreachable"
        assert down.json()["remote"]["reachable"] is False and "Cannot reach" in down.json()["remote"]["error"]
    finally:
        close_scheduler_for(engine)
        engine.backend.unload()
