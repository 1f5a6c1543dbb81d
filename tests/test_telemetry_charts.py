"""Memory charts as plain figures (data → plotly), and the GPU monitor page rendering in AppTest."""
from __future__ import annotations

import json
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.telemetry.snapshots import GpuSnapshot, QueryTrace, StageMark, TelemetrySample
from dashboard.widgets.memory_chart import STAGE_COLOURS, load_figure, memory_figure

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
T0 = 1_790_000_000.0


def _samples(gpus: int, n: int = 20) -> list[TelemetrySample]:
    return [
        TelemetrySample(
            time=T0 + i * 0.5,
            gpus=tuple(
                GpuSnapshot(index=g, name="NVIDIA GeForce RTX 4090 D", used_bytes=int((15.2 - 6.7 * g + i * 0.01) * 1e9),
                            total_bytes=int(22.2e9), process_bytes=int((14.0 - 6 * g) * 1e9) if g == 0 else None,
                            utilization_pct=40 + i, temperature_c=60, power_w=210.5, reserved_bytes=int(7e9))
                for g in range(gpus)),
            process_rss_bytes=int(0.4e9 + i * 1e6),
            process_cpu_pct=None if i == 0 else 12.0,
        )
        for i in range(n)
    ]


def _trace(start: float) -> QueryTrace:
    edges = [start, start + 0.5, start + 1.0, start + 2.0, start + 4.0]
    stages = tuple(StageMark(name, edges[i], edges[i + 1], {"cuda:0": 15.3, "cpu": 0.4})
                   for i, name in enumerate(STAGE_COLOURS))
    return QueryTrace("q1", "xcomposer2d5-7b", "图中表格第三列第一行的数值是多少？", start, edges[-1], "answered", stages)


def test_two_gpus_get_rows_ceilings_shares_and_stage_bands() -> None:
    fig = memory_figure(_samples(2), [_trace(T0 + 2)])
    names = [t.name for t in fig.data]
    assert {"GPU0 used (all processes)", "GPU1 used (all processes)", "GPU0 this process", "GPU1 this process",
            "GPU0 total 22.2 GB", "GPU1 total 22.2 GB"} <= set(names)
    used0 = next(t for t in fig.data if t.name == "GPU0 used (all processes)")
    assert used0.y[0] == 15.2 and len(used0.y) == 20
    share1 = next(t for t in fig.data if t.name == "GPU1 this process")
    assert share1.y[0] == 7.0  # NVML could not attribute GPU1: torch's reserved bytes stand in
    ceiling = next(t for t in fig.data if t.name == "GPU0 total 22.2 GB")
    assert list(ceiling.y) == [22.2, 22.2]
    assert len(fig.layout.shapes) == 4 * 2  # four stage bands, drawn on both GPU rows
    assert {s.fillcolor for s in fig.layout.shapes} == set(STAGE_COLOURS.values())
    assert set(STAGE_COLOURS) <= set(names)  # a legend entry per stage colour
    hover = next(t for t in fig.data if t.name == "stages").hovertext
    assert any("decode · 2.00 s" in h and "cuda:0 15.30 GB" in h for h in hover)
    json.loads(fig.to_json())  # plotly validates and serialises it as the browser will receive it


def test_bands_outside_the_window_are_left_out() -> None:
    fig = memory_figure(_samples(1), [_trace(T0 - 100), _trace(T0 + 100)])
    assert len(fig.layout.shapes) == 0


def test_without_gpu_the_chart_shows_the_process() -> None:
    fig = memory_figure(_samples(0), [_trace(T0 + 2)], state="no NVIDIA driver (libnvidia-ml not found)")
    names = [t.name for t in fig.data]
    assert "RSS" in names and "CPU %" in names
    assert "no NVIDIA driver" in fig.layout.title.text
    assert len(fig.layout.shapes) == 4
    assert load_figure(_samples(0)) is None


def test_load_figure_has_utilisation_temperature_power() -> None:
    fig = load_figure(_samples(2))
    assert [a.text for a in fig.layout.annotations] == ["Utilisation %", "Temperature °C", "Power W"]
    assert len(fig.data) == 6 and fig.data[0].y[0] == 40


def test_empty_buffer_draws_an_empty_chart() -> None:
    assert len(memory_figure([], []).data) == 2


def test_gpu_monitor_page_renders_its_charts() -> None:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("../pages/gpu_monitor.py").run()
    assert not at.exception
    assert at.title[0].value == "GPU monitor"
    charts = at.get("plotly_chart")
    assert charts, "the memory chart must render"
    figure = json.loads(charts[0].proto.spec)
    names = {trace.get("name") for trace in figure["data"]}
    assert "RSS" in names or "GPU0 used (all processes)" in names
    assert any(c.value.endswith(("GB", "CPU")) and (":material/memory:" in c.value) for c in at.caption)
    at.button(key="gpu-monitor-snapshot").click().run()  # the samples download as a snapshot, CSV and XLSX
    assert [d.label for d in at.download_button] == ["CSV", "XLSX"]
    at.segmented_control(key="gpu-monitor-window").set_value("1 min").run()
    assert not at.exception


def test_gpu_monitor_lists_recent_queries(engine) -> None:
    engine.ask([_png_bytes()], "What is this?", engine.default_generation(max_new_tokens=3)).collect()
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("../pages/gpu_monitor.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "decode_s" in table.columns and "What is this?" in set(table["question"])


def _png_bytes() -> bytes:
    from PIL import Image

    from tests.image_factory import encode

    return encode(Image.new("RGB", (64, 64), "white"), "PNG")


def test_stage_bands_follow_wall_clock_of_samples() -> None:
    now = time.time()
    samples = [TelemetrySample(now - 1, (), 1, None), TelemetrySample(now, (), 1, None)]
    trace = _trace(now - 0.9)
    fig = memory_figure(samples, [trace])
    assert fig.layout.shapes  # the trace overlaps the two samples: same clock



def test_hundreds_of_queries_in_the_window_band_only_the_most_recent() -> None:
    """A long-running dashboard keeps hundreds of queries in its window; the chart bands the latest 40
    (one shape per stage per GPU row), so a redraw stays cheap instead of growing without bound."""
    from dashboard.widgets.memory_chart import MAX_BANDED_QUERIES

    samples = _samples(2, n=2000)  # 1,000 s of samples
    traces = [_trace(T0 + 2 * i) for i in range(400)]  # 400 queries inside it
    fig = memory_figure(samples, traces)
    assert len(fig.layout.shapes) == MAX_BANDED_QUERIES * 4 * 2
    newest = max(shape.x1 for shape in fig.layout.shapes)
    assert newest == max(shape.x1 for shape in memory_figure(samples, traces[-1:]).layout.shapes)
