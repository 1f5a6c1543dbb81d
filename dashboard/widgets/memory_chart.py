"""Memory and load charts. The figure builders are plain functions (samples → plotly Figure), testable
without Streamlit running; `live_memory_chart` / `live_load_chart` are the fragments pages place.

Memory chart, one row per GPU: the card's used memory (every process, as nvidia-smi shows it), this
process's share (NVML's per-process figure; torch's reserved bytes where NVML cannot attribute it,
e.g. inside a container), the card's total as a dashed ceiling, and shaded bands for the stages of
recent queries (hover the small marks at the top for each stage's duration and peak memory).
Without a GPU: this process's RSS and CPU use, so the chart still moves on a laptop.

The builders take the analyst's language (names, axis titles, hover words; assets/i18n) and time zone (the
time axis shows that zone's wall clock); the live fragments pass the session's.
"""
from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core.telemetry import markers
from core.telemetry.readout import GB
from core.telemetry.sampler import get_sampler
from core.telemetry.snapshots import GpuSnapshot, QueryTrace, TelemetrySample
from dashboard.widgets.display_time import analyst_zone
from dashboard.widgets.interface_language import ENGLISH, current_language, interface_text, table
from dashboard.widgets.outside_text import plotly_text

STAGE_COLOURS = {"preprocess": "#9e9e9e", "vision": "#f59e0b", "prefill": "#3b82f6", "decode": "#22c55e"}
AREA = "rgba(99, 102, 241, 0.12)"  # light, so the stage bands beneath it keep their colours
GPU_COLOURS = ("#6366f1", "#f97316", "#10b981", "#e11d48", "#0ea5e9", "#a855f7", "#eab308", "#64748b")
REFRESH_S = 1.0
# Process CPU % over one 0.5 s tick swings between 0 and a burst (a page redraw, a token): four ticks
# averaged show the load an analyst means.
CPU_SMOOTHING = 4  # how often the live charts redraw (the sampler itself ticks every sample_interval_s)


def _time(epoch_s: float, zone: dt.tzinfo | None = None) -> dt.datetime:
    # Plotly draws a datetime's wall clock and ignores its offset: converted to the zone, the axis reads it.
    return dt.datetime.fromtimestamp(epoch_s, zone).replace(tzinfo=None)


def _words(language: str) -> Callable[..., str]:  # the chart's text in `language`, escaped for Plotly's HTML
    return functools.partial(interface_text, language, escape=plotly_text)


def _share(gpu: GpuSnapshot) -> int | None:
    return gpu.process_bytes if gpu.process_bytes is not None else gpu.reserved_bytes


def _series(samples: Sequence[TelemetrySample], index: int,
            zone: dt.tzinfo | None = None) -> tuple[list[dt.datetime], list[GpuSnapshot | None]]:
    by_index = [{g.index: g for g in s.gpus}.get(index) for s in samples]
    return [_time(s.time, zone) for s in samples], by_index


def memory_figure(samples: Sequence[TelemetrySample], traces: Sequence[QueryTrace] = (), state: str = "ok",
                  language: str = ENGLISH, zone: dt.tzinfo | None = None) -> go.Figure:
    """Per-GPU memory over time with ceilings and stage bands; this process's RSS/CPU when no GPU was read."""
    cards = sorted({(g.index, g.name) for s in samples for g in s.gpus})
    if not cards:
        return process_figure(samples, traces, state, language, zone)
    words = _words(language)
    fig = make_subplots(
        rows=len(cards), cols=1, shared_xaxes=True, vertical_spacing=0.08 if len(cards) > 1 else 0.0,
        subplot_titles=[f"GPU{index} · {name}" for index, name in cards],
    )
    for row, (index, _name) in enumerate(cards, start=1):
        x, gpus = _series(samples, index, zone)
        used = [g.used_bytes / GB if g and g.used_bytes is not None else None for g in gpus]
        share = [_share(g) / GB if g and _share(g) is not None else None for g in gpus]
        totals = [g.total_bytes / GB for g in gpus if g and g.total_bytes]
        fig.add_trace(go.Scatter(
            x=x, y=used, name=words("chart.gpu_used", index=index), mode="lines", fill="tozeroy",
            line={"color": "#6366f1", "width": 2}, fillcolor=AREA,
            hovertemplate=f"%{{y:.2f}} GB<extra>GPU{index} {words('chart.gpu_used_hover')}</extra>",
        ), row=row, col=1)
        fig.add_trace(go.Scatter(
            x=x, y=share, name=words("chart.gpu_this_process", index=index), mode="lines",
            line={"color": "#ec4899", "width": 2, "dash": "dot"},
            hovertemplate=f"%{{y:.2f}} GB<extra>{words('chart.this_process')}</extra>",
        ), row=row, col=1)
        if totals:
            total = max(totals)
            fig.add_trace(go.Scatter(
                x=[x[0], x[-1]], y=[total, total], name=words("chart.gpu_total", index=index, total=total), mode="lines",
                line={"color": "#dc2626", "width": 1.5, "dash": "dash"},
                hovertemplate=words("chart.total_hover", total=total) + "<extra></extra>",
            ), row=row, col=1)
            fig.update_yaxes(range=[0, total * 1.08], row=row, col=1)
        fig.update_yaxes(title_text=words("chart.memory_axis"), row=row, col=1)
    fig.update_xaxes(title_text=words("chart.time_axis", zone=_zone_name(zone)), row=len(cards), col=1)
    _add_stage_bands(fig, samples, traces, rows=len(cards), language=language, zone=zone)
    return _finish(fig, height=120 + 240 * len(cards))


def _zone_name(zone: dt.tzinfo | None) -> str:
    return str(zone) if zone is not None else "server"  # a ZoneInfo's str() is its IANA name


def process_figure(samples: Sequence[TelemetrySample], traces: Sequence[QueryTrace] = (), state: str = "",
                   language: str = ENGLISH, zone: dt.tzinfo | None = None) -> go.Figure:
    """No GPU reading: this process's RSS (GB) and CPU use (%, right axis) over time, with stage bands."""
    words = _words(language)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    title = words("chart.process_title_no_gpu", state=state) if state else words("chart.process_title")
    fig.update_layout(title={"text": title,
                             "x": 0.5, "xanchor": "center", "y": 0.97, "yanchor": "top", "font": {"size": 14}})
    x = [_time(s.time, zone) for s in samples]
    fig.add_trace(go.Scatter(
        x=x, y=[s.process_rss_bytes / GB for s in samples], name=words("chart.rss"), mode="lines", fill="tozeroy",
        line={"color": "#6366f1", "width": 2}, fillcolor=AREA,
        hovertemplate=f"%{{y:.3f}} GB<extra>{words('chart.rss')}</extra>",
    ), secondary_y=False)
    fig.add_trace(go.Scatter(
        x=x, y=_rolling_mean([s.process_cpu_pct for s in samples], CPU_SMOOTHING), name=words("chart.cpu"),
        mode="lines", line={"color": "#f97316", "width": 1.5},
        hovertemplate=f"%{{y:.0f}}%<extra>{words('chart.cpu_hover')}</extra>",
    ), secondary_y=True)
    fig.update_yaxes(title_text=words("chart.rss_axis"), rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text=words("chart.cpu_axis"), rangemode="tozero", showgrid=False, tickformat=".0f",
                     secondary_y=True)
    fig.update_xaxes(title_text=words("chart.time_axis", zone=_zone_name(zone)))
    _add_stage_bands(fig, samples, traces, rows=1, language=language, zone=zone)
    return _finish(fig, height=380)


def _rolling_mean(values: Sequence[float | None], width: int) -> list[float | None]:
    """Mean of the last `width` readings (fewer at the start); None where there is none yet."""
    means: list[float | None] = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - width + 1): i + 1] if v is not None]
        means.append(sum(window) / len(window) if window else None)
    return means


def load_figure(samples: Sequence[TelemetrySample], language: str = ENGLISH,
                zone: dt.tzinfo | None = None) -> go.Figure | None:
    """Utilisation (%), temperature (°C) and power (W) per GPU over time; None without a GPU."""
    cards = sorted({g.index for s in samples for g in s.gpus})
    if not cards:
        return None
    words = _words(language)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[words("chart.utilisation"), words("chart.temperature"), words("chart.power")])
    for n, index in enumerate(cards):
        x, gpus = _series(samples, index, zone)
        colour = GPU_COLOURS[n % len(GPU_COLOURS)]
        for row, field in enumerate(("utilization_pct", "temperature_c", "power_w"), start=1):
            fig.add_trace(go.Scatter(
                x=x, y=[getattr(g, field) if g else None for g in gpus], mode="lines", name=f"GPU{index}",
                legendgroup=f"GPU{index}", showlegend=row == 1, line={"color": colour, "width": 2},
            ), row=row, col=1)
    fig.update_yaxes(range=[0, 100], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=2, col=1)
    fig.update_yaxes(rangemode="tozero", row=3, col=1)
    fig.update_xaxes(title_text=words("chart.time_axis", zone=_zone_name(zone)), row=3, col=1)
    return _finish(fig, height=580)


MAX_BANDED_QUERIES = 40  # the most recent queries in the window get stage bands; older ones would be slivers


def _add_stage_bands(fig: go.Figure, samples: Sequence[TelemetrySample], traces: Sequence[QueryTrace],
                     rows: int, language: str = ENGLISH, zone: dt.tzinfo | None = None) -> None:
    """A shaded band per stage of each query inside the sampled window, and a hover mark on top of each."""
    if not samples:
        return
    first, last = samples[0].time, samples[-1].time
    seen: set[str] = set()
    words = _words(language)

    def stage_name(stage: str) -> str:
        return words(f"stage.{stage}") if stage in STAGE_COLOURS else stage

    def outcome(word: str) -> str:
        return words(f"outcome.{word}") if f"outcome.{word}" in table(language) else word

    marks_x, marks_text, marks_colour = [], [], []
    shapes: list[dict] = []
    recent = sorted((t for t in traces if t.start <= last), key=lambda t: t.start)[-MAX_BANDED_QUERIES:]
    for trace in recent:
        for stage in trace.stages:
            if stage.end <= stage.start or stage.end < first or stage.start > last:
                continue
            colour = STAGE_COLOURS.get(stage.stage, "#a3a3a3")
            for row in range(1, rows + 1):
                axis = "" if row == 1 else str(row)
                shapes.append({"type": "rect", "xref": f"x{axis}", "yref": f"y{axis} domain", "y0": 0, "y1": 1,
                               "x0": _time(max(stage.start, first), zone), "x1": _time(min(stage.end, last), zone),
                               "fillcolor": colour, "opacity": 0.3, "line": {"width": 0}, "layer": "below"})
            seen.add(stage.stage)
            peaks = ", ".join(f"{device} {gb:.2f} GB" for device, gb in stage.peak_memory_gb.items())
            marks_x.append(_time((max(stage.start, first) + min(stage.end, last)) / 2, zone))
            marks_text.append(f"{stage_name(stage.stage)} · {stage.end - stage.start:.2f} s<br>{peaks}<br>"
                              f"{plotly_text(trace.question[:40])} ({plotly_text(outcome(trace.outcome))})")  # hover is HTML
            marks_colour.append(colour)
    # All bands in one layout update: plotly's add_vrect re-checks every existing shape on each call, which
    # is quadratic and took minutes once a long-running dashboard had hundreds of queries in the window.
    fig.update_layout(shapes=[*fig.layout.shapes, *shapes])
    if marks_x:  # paper-anchored y: the marks sit on the top edge whatever the scale
        fig.add_trace(go.Scatter(
            x=marks_x, y=[1.0] * len(marks_x), yaxis="y99", mode="markers", showlegend=False, name="stages",
            marker={"symbol": "triangle-down", "size": 9, "color": marks_colour},
            hovertext=marks_text, hoverinfo="text",
        ))
        fig.update_layout(yaxis99={"overlaying": "y", "range": [0, 1.02], "visible": False, "fixedrange": True})
    for stage in (s for s in STAGE_COLOURS if s in seen):  # legend entries for the band colours
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=stage_name(stage),
                                 marker={"symbol": "square", "size": 12, "color": STAGE_COLOURS[stage], "opacity": 0.5}))


def _finish(fig: go.Figure, height: int) -> go.Figure:
    top, bottom = 100, 40
    fig.update_layout(
        height=height, margin={"l": 60, "r": 60, "t": top, "b": bottom}, hovermode="x unified",
        # The legend sits in the top margin, above the first row's title (30 px up, whatever the height).
        legend={"orientation": "h", "yanchor": "bottom", "y": 1 + 30 / (height - top - bottom), "x": 0,
                "traceorder": "normal"},
        uirevision="keep",  # keep the analyst's zoom and hidden series across live redraws
    )
    return fig


@st.fragment(run_every=REFRESH_S)
def live_memory_chart(window_s: float = 300.0, key: str = "memory-chart") -> None:
    """The memory chart of the last `window_s` seconds, redrawn every REFRESH_S without rerunning the page."""
    sampler = get_sampler()
    samples = sampler.samples(window_s)
    traces = markers.traces(since=samples[0].time) if samples else ()
    st.plotly_chart(memory_figure(samples, traces, sampler.state, current_language(), analyst_zone()), key=key)


@st.fragment(run_every=REFRESH_S)
def live_load_chart(window_s: float = 300.0, key: str = "load-chart") -> None:
    """Utilisation, temperature and power of every GPU; nothing without a GPU."""
    figure = load_figure(get_sampler().samples(window_s), current_language(), analyst_zone())
    if figure is not None:
        st.plotly_chart(figure, key=key)
