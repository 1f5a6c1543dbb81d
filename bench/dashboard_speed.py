"""Decode speed of an answer asked in the dashboard against the same question from the CLI (issue #17 item 1).

    python bench/dashboard_speed.py [--answers 7] [--max-new-tokens 96] [--out bench/results/dashboard_speed_cpu.json]

One run, one LOUPE_HOME, the demo model on the CPU: the dashboard is started as the README starts it
(tests/e2e/conftest.py serve_streamlit) and driven in headless Chromium (the Playground page, its default
sample, the question typed into the chat box and sent, then "New conversation" so every answer is asked
alone); `python -m core ask --json` asks the same question about the same image with the same
max_new_tokens. Decode tokens/s are read where each side records them: history rows (the page) and the
answer record (the CLI), both (output tokens - 1) / decode seconds.

Where the browser runs: in use, the analyst's browser is on the analyst's machine; here headless Chromium
shares the server's 2 cores, and rendering the streaming answer took 0.5-1 core of them (CDP's Performance
metrics: 1.3 s of JavaScript per 4 s answer). So each round asks the page twice: once with Chromium paused
(SIGSTOP) from the moment the question has left it (its websocket frame is sent) until the answer is in
history, standing for a browser on another machine, and once with Chromium rendering along on the same
cores. The browser is resumed before the page is checked to show the answer, so every answer is still
asked, streamed and shown by the real page. `ratio` = page (browser paused) median / CLI median;
`ratio_browser_on_same_cores` beside it, from the same run.

Made for a shared machine (2 cores, other work beside it): the three sides alternate in rounds whose order
rotates (CLI, page, page with the browser rendering; then starting one later, ...), so a load that rises
or falls during the run weighs on all alike; `--answers` answers on each side, their medians compared
(and the median of the rounds' own ratios beside it). One page answer before them is not counted (the
page's first question pays the page's one-off costs, as the CLI's model build before it does): it is in the
JSON as `page_warmup_run`. The load average at the start and the end, and with every answer, are in the
JSON, so a figure from a busy machine reads as one. Takes about 5 minutes on 2 idle cores.
Each answer is waited for in history, on the server's side: Playwright's waiting polls the page from inside
its renderer (0.5-0.6 s of DevTools commands per answer), which would load the cores the answer decodes on.

`--browser-core N` pins Chromium (and Playwright's driver) to core N and the server and the CLI to the other
cores. The JSON says which (`layout`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.backends.runtime import generation_threads  # noqa: E402
from core.history import HistoryStore  # noqa: E402
from core.inputs import samples  # noqa: E402
from tests.e2e.conftest import CHROMIUM, new_page, serve_streamlit, settle  # noqa: E402

QUESTION = "What is the title of the document?"
PAGE = "playground"


def cli_answer(home: Path, image: Path, max_new_tokens: int) -> dict[str, float]:
    env = {**os.environ, "LOUPE_HOME": str(home), "LOUPE_CONFIG": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "core", "ask", "--json", "--max-new-tokens", str(max_new_tokens), str(image), QUESTION],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    record = json.loads(done.stdout)
    return {"decode_tok_s": record["tokens_per_s"], "output_tokens": record["output_tokens"],
            "decode_s": record["timings_s"]["decode"]}


def _browser_processes() -> list:
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name()]


def page_answer(page, store: HistoryStore, number: int, socket=None) -> dict[str, float]:
    """Ask in the page and read the answer's figures from history. With `socket` (the page's websocket),
    Chromium is paused from when the question has left it until the answer is recorded (the module says why)."""
    from playwright.sync_api import expect

    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(QUESTION)
    paused = []
    try:
        if socket is None:
            box.press("Enter")
        else:
            def asks(payload: str | bytes) -> bool:
                return QUESTION.encode() in (payload if isinstance(payload, bytes) else payload.encode())

            with socket.expect_event("framesent", predicate=asks):
                box.press("Enter")
            paused = _browser_processes()
            for process in paused:
                process.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 180
        while (entry := store.get(number)) is None:
            assert time.monotonic() < deadline, f"answer #{number} not in history after 180 s"
            time.sleep(0.05)
    finally:
        for process in paused:
            process.send_signal(signal.SIGCONT)
    expect(page.get_by_text(f"Recorded in history as #{number}.")).to_be_visible()
    settle(page)
    assert entry.status == "answered" and entry.page == PAGE, entry
    page.get_by_role("button", name="New conversation").click()
    expect(page.get_by_text(f"Recorded in history as #{number}.")).to_have_count(0)
    settle(page)
    return {"decode_tok_s": entry.tokens_per_s, "output_tokens": entry.output_tokens,
            "decode_s": entry.timings["decode"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=7, help="answers on each side (the medians are compared)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dashboard_speed_cpu.json")
    parser.add_argument("--browser-core", type=int, default=None, help="run Chromium on this core only")
    args = parser.parse_args()
    every_core = os.sched_getaffinity(0)
    browser_cores = {args.browser_core} if args.browser_core is not None else every_core
    other_cores = every_core - browser_cores or every_core
    os.sched_setaffinity(0, other_cores)  # the server and every CLI run inherit these
    from playwright.sync_api import expect, sync_playwright

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="loupe-dashboard-speed-"))
    sample = samples.for_scenario("general")[0]  # the Playground's default sample
    image = samples.SAMPLES_DIR / sample.file
    cli_answer(home, image, args.max_new_tokens)  # builds the demo model into the home once; not counted
    env = {"LOUPE_HOME": str(home), "LOUPE_CONFIG": "", "LOUPE_MAX_NEW_TOKENS": str(args.max_new_tokens)}
    page_runs: list[dict[str, float]] = []  # Chromium paused while the server answers
    shared_runs: list[dict[str, float]] = []  # Chromium rendering along on the same cores
    cli_runs: list[dict[str, float]] = []
    server = serve_streamlit(env=env)
    url = next(server)
    try:
        os.sched_setaffinity(0, browser_cores)  # Playwright's driver and Chromium inherit these
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            os.sched_setaffinity(0, other_cores)
            expect.set_options(timeout=180_000)
            page = new_page(browser)
            sockets: list = []
            page.on("websocket", lambda socket: sockets.append(socket))
            page.goto(url)  # the Playground is the default page
            expect(page.get_by_role("heading", name="Playground")).to_be_visible()
            expect(page.get_by_text("As the model sees it")).to_be_visible()
            settle(page)
            store = HistoryStore(home / "history.sqlite3")
            warmup = page_answer(page, store, 1)
            asked = 1
            sides = ("cli", "page", "shared")
            runs_of = {"cli": cli_runs, "page": page_runs, "shared": shared_runs}
            for round_ in range(args.answers):
                for side in sides[round_ % 3:] + sides[: round_ % 3]:
                    if side == "cli":
                        run = cli_answer(home, image, args.max_new_tokens)
                    else:
                        asked += 1
                        run = page_answer(page, store, asked, socket=sockets[-1] if side == "page" else None)
                    runs_of[side].append({**run, "load_average_1min": round(os.getloadavg()[0], 2)})
                print(f"round {round_ + 1}: page {page_runs[-1]['decode_tok_s']:.1f} tok/s, browser rendering "
                      f"along {shared_runs[-1]['decode_tok_s']:.1f}, CLI {cli_runs[-1]['decode_tok_s']:.1f}",
                      file=sys.stderr)
            browser.close()
    finally:
        server.close()
    page_median = statistics.median(r["decode_tok_s"] for r in page_runs)
    shared_median = statistics.median(r["decode_tok_s"] for r in shared_runs)
    cli_median = statistics.median(r["decode_tok_s"] for r in cli_runs)
    pair_ratios = [p["decode_tok_s"] / c["decode_tok_s"] for p, c in zip(page_runs, cli_runs, strict=True)]
    report = {
        "page_decode_tok_s": round(page_median, 1),
        "cli_decode_tok_s": round(cli_median, 1),
        "ratio": round(page_median / cli_median, 3),
        "pair_ratio_median": round(statistics.median(pair_ratios), 3),
        "browser": "paused from the question's websocket frame until the answer is in history (another machine's)",
        "page_shared_cores_decode_tok_s": round(shared_median, 1),
        "ratio_browser_on_same_cores": round(shared_median / cli_median, 3),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "device": "cpu",
        "model": "demo-llava-v2",
        "question": QUESTION,
        "image": sample.file,
        "max_new_tokens": args.max_new_tokens,
        "answers_each": args.answers,
        "order": "rounds rotate: CLI, page, page with the browser rendering; then page, ..., CLI; ...",
        "layout": (f"Chromium on core {args.browser_core}; server and CLI on cores {sorted(other_cores)}"
                   if args.browser_core is not None else "every process on every core"),
        "torch_threads_each_side": generation_threads(len(other_cores)),
        "page_warmup_run": warmup,
        "page_runs": page_runs,
        "page_shared_cores_runs": shared_runs,
        "cli_runs": cli_runs,
        "cpus": os.cpu_count(),
        "run_s": round(time.perf_counter() - started, 1),
        "python": platform.python_version(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("page_decode_tok_s", "cli_decode_tok_s", "ratio",
                                             "ratio_browser_on_same_cores")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
