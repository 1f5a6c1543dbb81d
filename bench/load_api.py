"""Load on the OpenAI-compatible API over loopback: N concurrent clients, a fixed count of requests.

    python bench/load_api.py [--clients 4] [--requests 40] [--max-tokens 16] [--batch 16]
    # writes bench/results/load_api_<cpu|cuda>.json

The server is a real `python -m core serve --port 0` subprocess on 127.0.0.1 (the demo model unless
LOUPE_MODEL is set), so the clients' threads never share a GIL with the model. Two phases:
1. load: `clients` closed-loop clients (one request in flight each, `user` = client-i) share `requests`
   non-streaming requests; latency is client-side wall time. Per-client counts show how evenly the queue
   served them (Jain's index: 1.0 = perfectly even).
2. fairness: one session queues a batch of `batch` requests at once; when they wait, another session
   asks one question (streamed, so the server's ": N requests ahead" comment gives its queue position).
   Round-robin queues it behind at most two batch requests (the running one and the next); plain FIFO
   would queue it behind the whole batch.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
COLOURS = ("teal", "navy", "olive", "maroon", "purple", "gray", "orange", "black")


def _image_uri(colour: str) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _body(user: str, index: int, max_tokens: int) -> dict[str, Any]:
    return {"model": "loupe", "max_tokens": max_tokens, "user": user, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _image_uri(COLOURS[index % len(COLOURS)])}},
        {"type": "text", "text": f"What is in image {index}?"}]}]}


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`python -m core serve --port 0`; the URL is read from the line it prints once it listens."""
    process = subprocess.Popen([sys.executable, "-m", "core", "serve", "--host", "127.0.0.1", "--port", "0"],
                               cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"(http://127\.0\.0\.1:\d+)/v1", line)
        if found:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep draining its log
            url = found.group(1)
            break
    else:
        raise RuntimeError(f"the server exited with {process.wait()}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not answer /health within 120 s")


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def load_phase(url: str, clients: int, requests: int, max_tokens: int) -> dict[str, Any]:
    remaining = iter(range(requests))
    lock = threading.Lock()
    records: list[dict[str, Any]] = []

    def client(name: str) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    index = next(remaining, None)
                if index is None:
                    return
                started = time.perf_counter()
                try:
                    response = http.post("/v1/chat/completions", json=_body(name, index, max_tokens))
                    ok, tokens = response.status_code == 200, 0
                    if ok:
                        tokens = response.json()["usage"]["completion_tokens"]
                except httpx.HTTPError:
                    ok, tokens = False, 0
                records.append({"client": name, "ok": ok, "tokens": tokens, "latency_s": time.perf_counter() - started})

    threads = [threading.Thread(target=client, args=(f"client-{i}",)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies = sorted(r["latency_s"] for r in records if r["ok"])
    per_client = {}
    for i in range(clients):
        mine = [r["latency_s"] for r in records if r["client"] == f"client-{i}" and r["ok"]]
        per_client[f"client-{i}"] = {"requests": len(mine), "mean_s": round(statistics.fmean(mine), 3) if mine else None}
    counts = [c["requests"] for c in per_client.values()]
    jain = sum(counts) ** 2 / (len(counts) * sum(c * c for c in counts)) if any(counts) else 0.0
    return {
        "clients": clients, "requests": requests, "max_tokens": max_tokens,
        "p50_s": round(_percentile(latencies, 50), 3) if latencies else None,
        "p95_s": round(_percentile(latencies, 95), 3) if latencies else None,
        "mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
        "errors": sum(1 for r in records if not r["ok"]),
        "wall_s": round(wall, 3), "throughput_rps": round(len(latencies) / wall, 3),
        "tokens_per_s": round(sum(r["tokens"] for r in records) / wall, 2),
        "per_client": per_client, "jain_fairness": round(jain, 4),
    }


def fairness_phase(url: str, batch: int, max_tokens: int) -> dict[str, Any]:
    finished: list[tuple[str, float]] = []
    lock = threading.Lock()

    positions: list[int] = []

    def ask(user: str, index: int) -> None:
        response = httpx.post(f"{url}/v1/chat/completions", json=_body(user, index, max_tokens), timeout=600)
        with lock:
            finished.append((user if response.status_code == 200 else f"{user}:error", time.perf_counter()))

    def ask_streaming(user: str, index: int) -> None:
        """Streamed, to read the position the server gave it (": N requests ahead") when it was queued."""
        body = {**_body(user, index, max_tokens), "stream": True}
        ok = False
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
            for line in response.iter_lines():
                found = re.match(r": (\d+) requests? ahead", line)
                if found and not positions:
                    positions.append(int(found.group(1)))
                ok = ok or line == "data: [DONE]"
        with lock:
            finished.append((user if ok else f"{user}:error", time.perf_counter()))

    batch_threads = [threading.Thread(target=ask, args=("batch", i)) for i in range(batch)]
    started = time.perf_counter()
    for thread in batch_threads:
        thread.start()
    deadline = time.monotonic() + 60
    waiting = 0
    while time.monotonic() < deadline and not finished:  # until the batch is queued behind its first request
        waiting = httpx.get(f"{url}/health").json()["queue"]["waiting"]
        if waiting >= batch - 1:
            break
        time.sleep(0.01)
    single_sent = time.perf_counter()
    single = threading.Thread(target=ask_streaming, args=("single", 99))
    single.start()
    for thread in [*batch_threads, single]:
        thread.join()
    single_done = dict(finished).get("single", float("inf"))
    overtaking = sum(1 for user, t in finished if user == "batch" and single_sent < t < single_done)
    return {
        "batch_requests": batch, "errors": sum(":error" in user for user, _ in finished),
        "batch_waiting_when_single_sent": waiting,
        # where the server queued the single question: round-robin puts it behind the running request and at
        # most one more of the batch (2); FIFO would put it behind every queued one (batch_waiting + 1)
        "single_position_when_queued": positions[0] if positions else 0,
        # batch requests finished between sending the single question and its answer (this includes any that
        # finished while it was still being sent and decoded)
        "batch_done_before_single": overtaking,
        "single_latency_s": round(single_done - single_sent, 3),
        "batch_wall_s": round(max(t for u, t in finished if u == "batch") - started, 3),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process, url = start_server(env)
    try:
        health = httpx.get(f"{url}/health").json()
        for i in range(2):  # warm-up
            httpx.post(f"{url}/v1/chat/completions", json=_body("warm-up", i, args.max_tokens), timeout=600)
        result = load_phase(url, args.clients, args.requests, args.max_tokens)
        result["fairness"] = fairness_phase(url, args.batch, args.max_tokens)
        result["errors"] += result["fairness"]["errors"]
    finally:
        process.terminate()
        process.wait(30)
    device = health["gpus"][0]["name"] if health["device"] == "cuda" and health["gpus"] else health["device"]
    result.update(model=health["model"], device=device, server="python -m core serve (subprocess, loopback)")
    kind = "cuda" if health["device"] == "cuda" else "cpu"
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"load_api_{kind}.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
