"""The Photo tab's results as HTML: one card per face, the face and its heatmap side by side first.

Each card: the face crop and the heatmap over it (each `SIDE` px, shrinking on a phone), with Grad-CAM's map
beside them and how far the two agree where the heatmap is another method's, the label, the seven
probabilities as bars, how far to trust the heatmap (its faithfulness verdict) and where its mass lies
(the facial-region shares), and what the model answers with each region hidden (the what-if,
emotion/whatif.py). Above the cards: what the heatmap's colours mean, with the method and layer.
Pictures are inlined (data: URLs), so a result is one self-contained value (Gradio's share links keep it).
"""
from __future__ import annotations

import base64
import html

import cv2
import numpy as np

from emotion.draw import COLOURS
from emotion.explain import CLASS_AGNOSTIC, overlay
from emotion.regions import REGION_COLOURS, REGION_LABELS, REGIONS

SIDE = 320  # pixels of each face picture (shown at up to 288 CSS px, at least 256 on a desktop)

CSS = """
.ev-legend { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 12px; margin: 0 0 10px; }
.ev-scale { display: inline-block; width: 160px; height: 12px; border-radius: 3px; }
.ev-face { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px; margin: 0 0 12px; }
.ev-face h3 { margin: 0 0 8px; font-size: 1.1em; }
.ev-body { display: flex; flex-wrap: wrap; gap: 12px; }
.ev-pair { display: grid; grid-template-columns: repeat(2, minmax(0, 288px)); gap: 8px; flex: 0 1 584px; }
.ev-pair figure { margin: 0; min-width: 0; }
.ev-pair img { width: 100%; height: auto; display: block; border-radius: 4px; }
.ev-pair figcaption { font-size: 0.85em; text-align: center; }
.ev-pair.ev-three { grid-template-columns: repeat(3, minmax(0, 288px)); flex-basis: 880px; }
.ev-agree { grid-column: 1 / -1; margin: 0; font-size: 0.85em; }
.ev-details { flex: 1 1 240px; min-width: 0; }
.ev-bars { list-style: none; padding: 0; margin: 0 0 8px; }
.ev-bars li { display: grid; grid-template-columns: 6.5em 1fr 3em; align-items: center; gap: 6px;
              font-size: 0.9em; margin: 0; padding: 1px 0; }
.ev-bars .ev-track { background: var(--background-fill-secondary); height: 12px; border-radius: 3px;
                     position: relative; }
.ev-bars .ev-base { position: absolute; top: -2px; width: 2px; height: 16px; background: #000; }
.ev-note { font-size: 0.8em; margin: 0; opacity: 0.8; }
.ev-bars .ev-fill { height: 12px; border-radius: 3px; }
.ev-bars .ev-top { font-weight: bold; }
.ev-bars .ev-pct { text-align: right; }
.ev-verdict { margin: 6px 0; padding: 6px 8px; border-radius: 4px; border-left: 4px solid #93a1a1;
              background: var(--background-fill-secondary); font-size: 0.9em; }
.ev-verdict.good { border-left-color: #2e9d48; }
.ev-verdict.weak { border-left-color: #d4a100; }
.ev-verdict.chance, .ev-verdict.untestable, .ev-verdict.empty { border-left-color: #dc322f; }
.ev-verdict.pending { border-left-color: #268bd2; font-style: italic; }
.ev-h4 { font-weight: bold; font-size: 0.9em; margin: 8px 0 2px; }
.ev-whatif { margin: 2px 0 6px; font-size: 0.9em; }
@media (max-width: 600px) { .ev-face { padding: 6px; } .ev-pair { gap: 4px; }
  .ev-pair.ev-three { grid-template-columns: repeat(2, minmax(0, 1fr)); } }
"""


LIVE_QUALITY = 80  # JPEG quality of the webcam's answered frames (app.py's FrameOutput)


def data_url(rgb: np.ndarray, quality: int = 90) -> str:
    """An RGB uint8 picture as an inline JPEG (a data: URL): shown by the browser, never written to disk."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def face_pictures(face, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(the face crop, the heatmap over it), both `side` x `side` RGB uint8."""
    interp = cv2.INTER_AREA if face.crop.shape[0] > side else cv2.INTER_CUBIC
    crop = cv2.resize(face.crop, (side, side), interpolation=interp)
    return crop, overlay(crop, face.heatmap)


def _colour_scale() -> str:
    """A CSS gradient with the heatmap's own colours (OpenCV's JET, as pytorch-grad-cam draws it), 0 to 1."""
    jet = cv2.applyColorMap(np.linspace(0, 255, 9).astype(np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]
    return "linear-gradient(to right, " + ", ".join(f"rgb({r},{g},{b})" for r, g, b in jet) + ")"


def legend(method: str, name: str) -> str:
    """The heatmaps' key: `name` says what they are (`emotion.explain.heatmap_name`), then the colours."""
    e = html.escape
    if method in CLASS_AGNOSTIC:
        meaning = ("red: where the layer's activations are strongest, blue: weakest. This method draws the same "
                   "map whatever the class, so it cannot answer \"why not X?\".")
    else:
        meaning = "red: pixels that raised the class's score most; blue: pixels that did not raise it."
    return (f'<div class="ev-legend"><span><b>Heatmap</b>: {e(name)}</span>'
            f'<span>low <span class="ev-scale" style="background: {_colour_scale()}"></span> high</span>'
            f'<span>{e(meaning)}</span></div>')


def _bars(rows: list[tuple], top: str | None, label: str, dash: bool = False, tick_name: str = "area") -> str:
    """One bar per (name, value, colour[, baseline]) row; a baseline is drawn as a black tick on the bar
    (`tick_name` says what it is, on hover)."""
    items = []
    for name, value, (r, g, b), *rest in rows:
        base = rest[0] if rest else None
        cls = ' class="ev-top"' if name == top else ""
        pct = "-" if dash else f"{value:.0%}"
        tick, base_attr = "", ""
        if base is not None:
            tick = f'<span class="ev-base" style="left:{base * 100:.1f}%" title="{tick_name} {base:.0%}"></span>'
            base_attr = f' data-baseline="{base:.4f}"'
        items.append(f'<li data-name="{html.escape(name)}" data-value="{value:.4f}"{base_attr}{cls}>'
                     f'<span>{html.escape(name)}</span>'
                     f'<span class="ev-track"><span class="ev-fill" style="display:block; width:{value * 100:.1f}%;'
                     f' background: rgb({r},{g},{b})"></span>{tick}</span><span class="ev-pct">{pct}</span></li>')
    return f'<ul class="ev-bars" aria-label="{html.escape(label)}">' + "".join(items) + "</ul>"


def face_card(i: int, face, check: dict, method: str) -> str:
    """The card of face number `i` (1-based, as on the annotated photo)."""
    e = html.escape
    crop, heat = face_pictures(face)
    top = face.probabilities[face.label]
    agnostic = method in CLASS_AGNOSTIC
    about = "not tied to a class" if agnostic else f"for {face.explained}"
    empty = float(face.heatmap.max()) <= 0
    faith = check.get("faithfulness") or {}
    regions = check.get("regions") or {}
    baseline = check.get("region_baseline") or {}
    probs = [(name, float(p), COLOURS.get(name, (0, 160, 0))) for name, p in face.probabilities.items()]
    shares = [(REGION_LABELS.get(k, k), float(regions.get(k, 0.0)), REGION_COLOURS.get(k, (147, 161, 161)),
               None if k not in baseline else float(baseline[k]))
              for k in (*REGIONS, *(k for k in regions if k not in REGIONS))]
    no_map = " (no positive evidence for this class anywhere: the map is empty)" if empty else ""
    second = check.get("second_map")
    third, agree = "", ""
    if second:  # Grad-CAM beside the face's own map, and how far they agree (emotion/compare.py)
        name = f"{second['method']} at {second['layer']}"
        third = (f'<figure><img src="{data_url(overlay(crop, second["heatmap"]))}" alt="Face {i}: {e(name)} '
                 f'{e(about)}" width="{SIDE}" height="{SIDE}"><figcaption>{e(name)}</figcaption></figure>')
        rho = second.get("agreement")
        agree = (f'<p class="ev-agree" data-agreement="{"" if rho is None else f"{rho:.4f}"}">'
                 f"{e(second['sentence'])}</p>")
    return (
        f'<section class="ev-face" data-face="{i}" data-label="{e(face.label)}">'
        f"<h3>Face {i}: {e(face.label)} {top:.0%}</h3>"
        f'<div class="ev-body"><div class="ev-pair{" ev-three" if third else ""}">'
        f'<figure><img src="{data_url(crop)}" alt="Face {i}" width="{SIDE}" height="{SIDE}">'
        "<figcaption>face</figcaption></figure>"
        f'<figure><img src="{data_url(heat)}" alt="Face {i}: heatmap {e(about)}" width="{SIDE}" height="{SIDE}">'
        f"<figcaption>heatmap {e(about)}{e(no_map)}</figcaption></figure>{third}{agree}</div>"
        '<div class="ev-details"><div class="ev-h4">Probabilities</div>'
        + _bars(probs, face.label, f"Face {i} probabilities")
        + f'<div class="ev-h4">Can this heatmap be trusted?</div>'
        f'<p class="ev-verdict {e(str(faith.get("level", "")))}">{e(str(faith.get("verdict", "Not checked.")))}</p>'
        '<div class="ev-h4">Where the heatmap lies</div>'
        + _bars(shares, None, f"Face {i} heatmap share by region", dash=sum(row[1] for row in shares) <= 0)
        + ('<p class="ev-note">Black tick: the region\'s share of the picture, what a map that looks nowhere in '
           "particular would give.</p>" if baseline else "")
        + whatif_html(i, check.get("what_if"))
        + "</div></div></section>"
    )


def whatif_html(i: int, w: dict | None) -> str:
    """The what-if block of a face card: the sentence, then per region the explained class's probability with
    that region hidden (a black tick: its probability as shown)."""
    if not w:
        return ""
    e = html.escape
    rows = [(REGION_LABELS.get(k, k), float(r["probability"]),
             (220, 50, 47) if r["changes_label"] else REGION_COLOURS.get(k, (147, 161, 161)), float(w["before"]))
            for k, r in w["regions"].items()]
    return (f'<div class="ev-h4">What if a part of the face were hidden?</div>'
            f'<p class="ev-whatif" data-most="{e(w["most"])}">{e(w["sentence"])}</p>'
            + _bars(rows, None, f"Face {i}: {w['explained']} with each region hidden", tick_name="as shown")
            + f'<p class="ev-note">Each bar: {e(w["explained"])} with that region filled in from the skin around it; '
            "black tick: as shown. Red: hiding it changes the answer.</p>")


def faces_html(faces, checks: list[dict], method: str, name: str) -> str:
    """The legend and every face's card, in the order of the numbers on the annotated photo."""
    if not faces:
        return ""
    return legend(method, name) + "".join(face_card(i + 1, f, c, method) for i, (f, c) in enumerate(zip(faces, checks)))
