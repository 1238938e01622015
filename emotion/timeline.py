"""The timeline of a video's emotions: per person, the seven smoothed probabilities over time (matplotlib).

One row of axes per person (the first `MAX_PEOPLE` ids), a line per class in the classes' colours, and a
dashed mark where the person's label changes, with the new label written at its top. `svg_html` gives the
chart as inline SVG for the app, inside a figure whose data attributes map time to the chart's width (the
app moves a playhead over it as the clip plays, and a click on it seeks the clip), and a line per person
saying which labels came when; `save_png` writes the same chart as a picture (the command line).
Elements carry ids for people and readers: `person-P` (axes), `person-P-CLASS` (lines), `change-P-I`.
"""
from __future__ import annotations

import html
import io
from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure  # a bare Figure: no pyplot, no display, safe in server threads

from emotion.clip import VideoResult
from emotion.draw import COLOURS

MAX_PEOPLE = 6  # rows drawn; the rest are in the CSV and the JSON
WIDTH_IN, ROW_IN, DPI = 9.0, 1.7, 100
# the same clip gives the same SVG; its text stays text (readable and searchable in the page)
SVG_STYLE = {"svg.hashsalt": "emotion-timeline", "svg.fonttype": "none"}

CSS = """
.ev-timeline { margin: 0; }
.ev-timeline .ev-scroll { overflow-x: auto; }
.ev-timeline .ev-chart { position: relative; cursor: pointer; min-width: 560px; }
.ev-timeline .ev-chart svg { width: 100%; height: auto; display: block; }
.ev-timeline .ev-playhead { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px;
                            background: #d33682; pointer-events: none; left: -10px; }
.ev-timeline figcaption { font-size: 0.85em; opacity: 0.85; margin: 4px 0; }
.ev-timeline ul { margin: 4px 0 0; padding-left: 1.2em; font-size: 0.9em; }
"""


def _rgb(label: str) -> tuple[float, float, float]:
    r, g, b = COLOURS.get(label, (0, 160, 0))
    return r / 255, g / 255, b / 255


def figure(result: VideoResult) -> Figure:
    people = result.people[:MAX_PEOPLE]
    fig = Figure(figsize=(WIDTH_IN, 0.6 + ROW_IN * max(1, len(people))), dpi=DPI, layout="constrained")
    axes = fig.subplots(max(1, len(people)), 1, sharex=True, squeeze=False)[:, 0]
    end = max(result.duration, max((r["time"] for r in result.rows), default=0.0), 1e-3)
    for ax, person in zip(axes, people):
        ax.set_gid(f"person-{person}")
        rows = [r for r in result.rows if r["person"] == person]
        times = [r["time"] for r in rows]
        for label in result.labels:
            values = [r["smoothed"][label] for r in rows]
            (line,) = ax.plot(times, values, color=_rgb(label), lw=1.8, label=label,
                              marker="o" if len(rows) < 3 else None, ms=3)
            line.set_gid(f"person-{person}-{label}")
        for i, c in enumerate(ch for ch in result.changes if ch["person"] == person):
            mark = ax.axvline(c["time"], color=_rgb(c["to"]), ls="--", lw=1.2)
            mark.set_gid(f"change-{person}-{i + 1}")
            ax.text(c["time"], 1.01, c["to"], color=_rgb(c["to"]), fontsize=8, ha="center", va="bottom",
                    transform=ax.get_xaxis_transform())
        ax.set_ylim(-0.03, 1.06)  # lines at 0 and 1 stay clear of the frame
        ax.set_yticks([0, 0.5, 1], ["0", "50%", "100%"])
        ax.set_ylabel(f"person {person}")
        ax.grid(alpha=0.3)
    if not people:
        axes[0].text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_yticks([])
    axes[0].set_xlim(0, end)
    axes[-1].set_xlabel("time (s)")
    if people:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=len(result.labels),
                   frameon=False, fontsize=9)
    return fig


def save_png(result: VideoResult, path) -> Path:
    figure(result).savefig(path, format="png")
    return Path(path)


def summary(result: VideoResult, person: int) -> str:
    """"Person 2 (0.5-3.0 s): neutral from 0.5 s, happy from 1.8 s" from the smoothed labels."""
    rows = [r for r in result.rows if r["person"] == person]
    parts = [f"{rows[0]['smoothed_label']} from {rows[0]['time']:.1f} s"]
    parts += [f"{c['to']} from {c['time']:.1f} s" for c in result.changes if c["person"] == person]
    return f"Person {person} ({rows[0]['time']:.1f}-{rows[-1]['time']:.1f} s): " + ", ".join(parts)


def svg_html(result: VideoResult) -> str:
    """The chart (inline SVG) with a playhead, a caption and a line per person, as one HTML figure."""
    fig = figure(result)
    buf = io.StringIO()
    with rc_context(SVG_STYLE):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prologue and doctype: it is inlined in the page
    x0, x1 = fig.axes[0].get_position().x0, fig.axes[0].get_position().x1  # after the layout of savefig
    t0, t1 = fig.axes[0].get_xlim()
    people = result.people
    more = len(people) - MAX_PEOPLE
    e = html.escape
    lines = "".join(f'<li data-person="{p}">{e(summary(result, p))}</li>' for p in people)
    note = f" {more} more people are in the CSV." if more > 0 else ""
    return (f'<figure class="ev-timeline" data-people="{",".join(map(str, people))}" '
            f'data-changes="{len(result.changes)}" data-left="{x0:.5f}" data-right="{x1:.5f}" '
            f'data-t0="{t0:.4f}" data-t1="{t1:.4f}">'
            f'<div class="ev-scroll"><div class="ev-chart" title="Click to show that moment of the clip">{svg}'
            '<div class="ev-playhead"></div></div></div>'
            f"<figcaption>Probabilities over time, smoothed over about half a second; a dashed line marks a "
            f"change of label. {result.frames} frames analysed"
            f"{'' if result.every_frame else f' ({result.rate:g} a second)'}.{e(note)}</figcaption>"
            f"<ul>{lines}</ul></figure>")
