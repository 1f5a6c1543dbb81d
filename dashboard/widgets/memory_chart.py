"""Memory and load charts. The figure builders are plain functions (samples → plotly Figure), testable
without Streamlit running; `live_memory_chart` / `live_load_chart` are the fragments pages place.

Memory chart, one row per GPU: the card's used memory (every process, as nvidia-smi shows it), this
process's share (NVML's per-process figure; torch's reserved bytes where NVML cannot attribute it,
e.g. inside a container), the card's total as a dashed ceiling, and shaded bands for the stages of
recent queries (hover the small marks at the top for each stage's duration and peak memory).
Without a GPU: this process's RSS and CPU use, so the chart still moves on a laptop.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core.records import GpuSnapshot, QueryTrace, TelemetrySample
from core.telemetry import markers
from core.telemetry.readout import GB
from core.telemetry.sampler import get_sampler

STAGE_COLOURS = {"preprocess": "#9e9e9e", "vision": "#f59e0b", "prefill": "#3b82f6", "decode": "#22c55e"}
REFRESH_S = 1.0  # how often the live charts redraw (the sampler itself ticks every sample_interval_s)


def _time(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s)


def _share(gpu: GpuSnapshot) -> int | None:
    return gpu.process_bytes if gpu.process_bytes is not None else gpu.reserved_bytes


def _series(samples: Sequence[TelemetrySample], index: int) -> tuple[list[dt.datetime], list[GpuSnapshot | None]]:
    by_index = [{g.index: g for g in s.gpus}.get(index) for s in samples]
    return [_time(s.time) for s in samples], by_index


def memory_figure(samples: Sequence[TelemetrySample], traces: Sequence[QueryTrace] = (), state: str = "ok") -> go.Figure:
    """Per-GPU memory over time with ceilings and stage bands; this process's RSS/CPU when no GPU was read."""
    cards = sorted({(g.index, g.name) for s in samples for g in s.gpus})
    if not cards:
        return process_figure(samples, traces, state)
    fig = make_subplots(
        rows=len(cards), cols=1, shared_xaxes=True, vertical_spacing=0.08 if len(cards) > 1 else 0.0,
        subplot_titles=[f"GPU{index} · {name}" for index, name in cards],
    )
    for row, (index, _name) in enumerate(cards, start=1):
        x, gpus = _series(samples, index)
        used = [g.used_bytes / GB if g and g.used_bytes is not None else None for g in gpus]
        share = [_share(g) / GB if g and _share(g) is not None else None for g in gpus]
        totals = [g.total_bytes / GB for g in gpus if g and g.total_bytes]
        fig.add_trace(go.Scatter(
            x=x, y=used, name=f"GPU{index} used (all processes)", mode="lines", fill="tozeroy",
            line={"color": "#6366f1", "width": 2}, hovertemplate="%{y:.2f} GB<extra>GPU%{meta} used</extra>", meta=index,
        ), row=row, col=1)
        fig.add_trace(go.Scatter(
            x=x, y=share, name=f"GPU{index} this process", mode="lines",
            line={"color": "#ec4899", "width": 2, "dash": "dot"},
            hovertemplate="%{y:.2f} GB<extra>this process</extra>",
        ), row=row, col=1)
        if totals:
            total = max(totals)
            fig.add_trace(go.Scatter(
                x=[x[0], x[-1]], y=[total, total], name=f"GPU{index} total {total:.1f} GB", mode="lines",
                line={"color": "#dc2626", "width": 1.5, "dash": "dash"}, hovertemplate=f"total {total:.1f} GB<extra></extra>",
            ), row=row, col=1)
            fig.update_yaxes(range=[0, total * 1.08], row=row, col=1)
        fig.update_yaxes(title_text="GB", row=row, col=1)
    _add_stage_bands(fig, samples, traces, rows=len(cards))
    fig.update_layout(height=120 + 240 * len(cards))
    return _finish(fig)


def process_figure(samples: Sequence[TelemetrySample], traces: Sequence[QueryTrace] = (), state: str = "") -> go.Figure:
    """No GPU reading: this process's RSS (GB) and CPU use (%, right axis) over time, with stage bands."""
    fig = make_subplots(specs=[[{"secondary_y": True}]],
                        subplot_titles=[f"This process (no GPU reading: {state})" if state else "This process"])
    x = [_time(s.time) for s in samples]
    fig.add_trace(go.Scatter(
        x=x, y=[s.process_rss_bytes / GB for s in samples], name="RSS", mode="lines", fill="tozeroy",
        line={"color": "#6366f1", "width": 2}, hovertemplate="%{y:.3f} GB<extra>RSS</extra>",
    ), secondary_y=False)
    fig.add_trace(go.Scatter(
        x=x, y=[s.process_cpu_pct for s in samples], name="CPU %", mode="lines",
        line={"color": "#f97316", "width": 1.5}, hovertemplate="%{y:.0f}%<extra>CPU</extra>",
    ), secondary_y=True)
    fig.update_yaxes(title_text="RSS GB", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="CPU %", rangemode="tozero", showgrid=False, secondary_y=True)
    _add_stage_bands(fig, samples, traces, rows=1)
    fig.update_layout(height=360)
    return _finish(fig)


def load_figure(samples: Sequence[TelemetrySample]) -> go.Figure | None:
    """Utilisation (%), temperature (°C) and power (W) per GPU over time; None without a GPU."""
    cards = sorted({g.index for s in samples for g in s.gpus})
    if not cards:
        return None
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=["Utilisation %", "Temperature °C", "Power W"])
    for index in cards:
        x, gpus = _series(samples, index)
        for row, field in enumerate(("utilization_pct", "temperature_c", "power_w"), start=1):
            fig.add_trace(go.Scatter(
                x=x, y=[getattr(g, field) if g else None for g in gpus], mode="lines", name=f"GPU{index}",
                legendgroup=f"GPU{index}", showlegend=row == 1,
            ), row=row, col=1)
    fig.update_yaxes(range=[0, 100], row=1, col=1)
    fig.update_layout(height=560)
    return _finish(fig)


def _add_stage_bands(fig: go.Figure, samples: Sequence[TelemetrySample], traces: Sequence[QueryTrace],
                     rows: int) -> None:
    """A shaded band per stage of each query inside the sampled window, and a hover mark on top of each."""
    if not samples:
        return
    first, last = samples[0].time, samples[-1].time
    seen: set[str] = set()
    marks_x, marks_text, marks_colour = [], [], []
    for trace in traces:
        for stage in trace.stages:
            if stage.end <= stage.start or stage.end < first or stage.start > last:
                continue
            colour = STAGE_COLOURS.get(stage.stage, "#a3a3a3")
            for row in range(1, rows + 1):
                fig.add_vrect(x0=_time(max(stage.start, first)), x1=_time(min(stage.end, last)), fillcolor=colour,
                              opacity=0.22, line_width=0, layer="below", row=row, col=1)
            seen.add(stage.stage)
            peaks = ", ".join(f"{device} {gb:.2f} GB" for device, gb in stage.peak_memory_gb.items())
            marks_x.append(_time((max(stage.start, first) + min(stage.end, last)) / 2))
            marks_text.append(f"{stage.stage} · {stage.end - stage.start:.2f} s<br>{peaks}<br>"
                              f"{trace.question[:40]} ({trace.outcome})")
            marks_colour.append(colour)
    if marks_x:  # paper-anchored y: the marks sit on the top edge whatever the scale
        fig.add_trace(go.Scatter(
            x=marks_x, y=[1.0] * len(marks_x), yaxis="y99", mode="markers", showlegend=False, name="stages",
            marker={"symbol": "triangle-down", "size": 9, "color": marks_colour},
            hovertext=marks_text, hoverinfo="text",
        ))
        fig.update_layout(yaxis99={"overlaying": "y", "range": [0, 1.02], "visible": False, "fixedrange": True})
    for stage in (s for s in STAGE_COLOURS if s in seen):  # legend entries for the band colours
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=stage, legendgroup="stages",
                                 marker={"symbol": "square", "size": 12, "color": STAGE_COLOURS[stage], "opacity": 0.5}))


def _finish(fig: go.Figure) -> go.Figure:
    fig.update_layout(
        margin={"l": 10, "r": 10, "t": 60, "b": 10}, hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.06, "x": 0},
        uirevision="keep",  # keep the analyst's zoom and hidden series across live redraws
    )
    return fig


@st.fragment(run_every=REFRESH_S)
def live_memory_chart(window_s: float = 300.0, key: str = "memory-chart") -> None:
    """The memory chart of the last `window_s` seconds, redrawn every REFRESH_S without rerunning the page."""
    sampler = get_sampler()
    samples = sampler.samples(window_s)
    traces = markers.traces(since=samples[0].time) if samples else ()
    st.plotly_chart(memory_figure(samples, traces, sampler.state), key=key)


@st.fragment(run_every=REFRESH_S)
def live_load_chart(window_s: float = 300.0, key: str = "load-chart") -> None:
    """Utilisation, temperature and power of every GPU; nothing without a GPU."""
    figure = load_figure(get_sampler().samples(window_s))
    if figure is not None:
        st.plotly_chart(figure, key=key)
