"""deploy/: the compose file parses, its services, ports and LOUPE_* names match Loupe's real settings and
commands, Prometheus scrapes what the compose file serves, and the Dockerfile installs the pinned torch."""
from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    return {k: str(v) for k, v in env.items()}


def test_compose_brings_up_loupe_beside_vllm() -> None:
    services = _compose()["services"]
    assert {"vllm", "loupe-api", "loupe-dashboard"} <= set(services)
    assert services["vllm"]["entrypoint"] == ["vllm", "serve"]
    engine_args = services["vllm"]["command"]
    assert "--limit-mm-per-prompt" in engine_args and "--max-model-len" in engine_args
    mm_limit = engine_args[engine_args.index("--limit-mm-per-prompt") + 1]
    assert re.fullmatch(r'\{"image": \d+\}', mm_limit)
    engine_port = engine_args[engine_args.index("--port") + 1]
    for name in ("loupe-api", "loupe-dashboard"):
        env = _environment(services[name])
        assert env["LOUPE_BACKEND"] == "openai"
        assert env["LOUPE_OPENAI_BASE_URL"] == f"http://vllm:{engine_port}/v1"
        assert int(env["LOUPE_MAX_IMAGES"]) <= int(re.search(r"\d+", mm_limit).group())
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    api = services["loupe-api"]
    assert api["command"][:4] == ["python", "-m", "core", "serve"]
    api_port = api["command"][api["command"].index("--port") + 1]
    assert f"{api_port}:{api_port}" in api["ports"]
    dashboard = services["loupe-dashboard"]
    assert "dashboard/app.py" in dashboard["command"] and "8501:8501" in dashboard["ports"]
    assert _environment(dashboard)["LOUPE_DASHBOARD_PASSWORD"]  # bound to 0.0.0.0, the dashboard requires a sign-in


def test_every_loupe_variable_is_a_real_setting() -> None:
    settings = {f"LOUPE_{f.name.upper()}" for f in fields(Settings)}
    used = {name for service in _compose()["services"].values() for name in _environment(service)
            if name.startswith("LOUPE_")}
    assert used and used <= settings, sorted(used - settings)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert set(re.findall(r"\bLOUPE_[A-Z_]+", dockerfile)) <= settings | {"LOUPE_CONFIG"}


def test_prometheus_scrapes_what_compose_serves() -> None:
    services = _compose()["services"]
    jobs = {job["job_name"]: job for job in yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]}
    (api_target,) = jobs["loupe-api"]["static_configs"][0]["targets"]
    api_port = services["loupe-api"]["command"][services["loupe-api"]["command"].index("--port") + 1]
    assert api_target == f"loupe-api:{api_port}"
    assert jobs["loupe-api"]["authorization"]["type"] == "Bearer"  # /metrics obeys api_token
    assert "LOUPE_API_TOKEN" in _environment(services["loupe-api"])
    (dashboard_target,) = jobs["loupe-dashboard"]["static_configs"][0]["targets"]
    assert dashboard_target == f"loupe-dashboard:{_environment(services['loupe-dashboard'])['LOUPE_METRICS_PORT']}"
    mounts = services["prometheus"]["volumes"]
    assert any(m.endswith(":" + jobs["loupe-api"]["authorization"]["credentials_file"] + ":ro") for m in mounts)


def test_dockerfile_installs_the_pinned_torch_from_the_cpu_index() -> None:
    pinned = re.search(r"^torch==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"pip install torch=={pinned} --index-url https://download.pytorch.org/whl/cpu" in dockerfile
    assert dockerfile.index("download.pytorch.org") < dockerfile.index("-r requirements.txt")  # CPU build first
    for copied in re.findall(r"^COPY (\S+) \S+$", dockerfile, re.M):
        assert (ROOT / copied).exists(), copied
