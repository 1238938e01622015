"""The audit's report: its figures (PNG) and report.html, drawn from the audit's summary alone.

    python -m train.report OUT   # re-writes OUT/report.html (and the figures it can) from OUT/summary.json

`write_report(summary, out, pictures)` is all train/audit.py calls. `summary` is what the audit writes to
summary.json; `pictures` holds what no JSON file should (the faces shown): per true and per predicted class
the summed grey faces, summed heatmaps and counts (`class_maps`), the mean face (`mean_face`), the confident
mistakes' crops and maps (`mistakes`, in the order of summary["confident_mistakes"]) and the sanity
check's examples (`sanity`). Without `pictures` (as from the command line) the figures drawn from faces are
left as they are and the rest are drawn again. Nothing here measures anything: a wording or a chart can be
changed and re-drawn without running the audit again.
"""
from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

import cv2
import numpy as np

from emotion.explain import overlay
from emotion.faithfulness import LEVELS, MARGIN
from emotion.regions import REGION_COLOURS, REGION_LABELS, REGIONS, draw_regions
from emotion.whatif import HIDDEN
from train.evaluate import plot_confusion


# ---------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grey_rgb(img: np.ndarray) -> np.ndarray:
    g = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, 2)


def _upscale(rgb: np.ndarray, side: int = 128) -> np.ndarray:
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)


def plot_class_maps(faces, maps, counts, labels, path: Path, title: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(labels), figsize=(2 * len(labels), 2.5), dpi=100)
    for k, ax in enumerate(np.atleast_1d(axes)):
        ax.axis("off")
        if counts[k]:
            face = _upscale(_grey_rgb(faces[k] / counts[k]))
            ax.imshow(overlay(face, maps[k] / counts[k]))
        ax.set_title(f"{labels[k]} (n={counts[k]})", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_mistakes(mistakes, pictures, path: Path) -> None:
    """Each confident mistake (summary["confident_mistakes"]): the face, the map for the class chosen, the map
    for the true class; `pictures` holds each one's grey face and the two maps."""
    plt = _plt()
    n = len(mistakes)
    cols = 3
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, 3 * cols, figsize=(2 * 3 * cols, 2.3 * rows), dpi=90, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (m, pic) in enumerate(zip(mistakes, pictures)):
        r, c = divmod(k, cols)
        crop = _upscale(_grey_rgb(pic["crop"]))
        true_panel = ((overlay(crop, pic["map_true"]), f"map: {m['true']} {m['p_true']:.0%}")
                      if pic["map_true"] is not None else (crop, f"(the model has no {m['true']})"))
        for j, (img, t) in enumerate(((crop, f"true {m['true']}"),
                                      (overlay(crop, pic["map_pred"]), f"map: {m['pred']} {m['confidence']:.0%}"),
                                      true_panel)):
            ax = axes[r, 3 * c + j]
            ax.imshow(img)
            ax.set_title(t, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_region_bars(tables: list[tuple[str, dict[str, dict[str, float]]]], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 0.45 * max(len(t[1]) for t in tables) + 1.4),
                             dpi=100, squeeze=False)
    for ax, (title, table) in zip(axes[0], tables):
        names = list(table)
        left = np.zeros(len(names))
        for region in REGIONS:
            vals = np.array([table[n].get(region, 0.0) for n in names])
            ax.barh(names, vals, left=left, color=np.array(REGION_COLOURS[region]) / 255, label=REGION_LABELS[region])
            for y, (l, v) in enumerate(zip(left, vals)):
                if v >= 0.07:
                    ax.text(l + v / 2, y, f"{v:.0%}", ha="center", va="center", fontsize=7, color="white")
            left += vals
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(REGIONS), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / fig.get_size_inches()[1], 1, 1))
    fig.savefig(path)
    plt.close(fig)


def plot_faithfulness(by_layer: dict[str, dict[str, dict]], path: Path) -> None:
    """Per layer, each method's mean score beside its face prior's, other class's and random maps'."""
    plt = _plt()
    layers = list(by_layer)
    fig, axes = plt.subplots(1, len(layers), figsize=(6.5 * len(layers), 3.4), dpi=100, squeeze=False)
    series = (("map", "#268bd2"), ("face_prior", "#b58900"), ("other_class", "#d33682"), ("random", "#93a1a1"))
    for ax, lay in zip(axes[0], layers):
        table = by_layer[lay]
        names = list(table)
        xs = np.arange(len(names))
        for k, (name, colour) in enumerate(series):
            vals = [(table[m]["mean_score"] if name == "map" else table[m]["controls"].get(name)) for m in names]
            vals = [np.nan if v is None else v for v in vals]
            ax.bar(xs + (k - 1.5) * 0.2, vals, 0.2, color=colour, label=name.replace("_", " "))
        ax.set_xticks(xs, names, fontsize=8)
        ax.set_title(f"{lay}: mean drop of the class logit (higher = more faithful)", fontsize=9)
    axes[0, 0].set_ylabel("area under the deletion curve")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_sanity(examples, stage_names, path: Path) -> None:
    """Each example's face, its trained map and its maps after each randomisation, with their correlation."""
    plt = _plt()
    cols = 2 + len(stage_names)
    fig, axes = plt.subplots(len(examples), cols, figsize=(1.9 * cols, 1.9 * len(examples) + 0.3), dpi=90,
                             squeeze=False)
    for r, ex in enumerate(examples):
        crop = _upscale(_grey_rgb(ex["crop"]))
        panels = [(crop, "face"), (overlay(crop, ex["trained"]), "trained")]
        panels += [(overlay(crop, m), f"{s}\nrho={rho:.2f}") for s, m, rho in zip(stage_names, ex["maps"], ex["rhos"])]
        for c, (img, t) in enumerate(panels):
            axes[r, c].imshow(img)
            axes[r, c].axis("off")
            axes[r, c].set_title(t, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.1%}"


# ---------------------------------------------------------------- HTML
def _table(header: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _img(out: Path, name: str, alt: str) -> str:
    return f'<p><img src="{name}" alt="{html.escape(alt)}"></p>' if (out / name).is_file() else ""


# ---------------------------------------------------------------- all of it
def draw_figures(s: dict, out: Path, pictures: dict | None = None) -> None:
    """The report's PNGs into `out`: from the summary `s` alone, and with `pictures` those drawn from faces."""
    labels = list(s["per_class_accuracy"])
    plot_confusion(np.array(s["confusion_matrix"]), labels, out / "confusion_matrix.png",
                   f"accuracy {s['accuracy']:.1%}, mean-class {s['mean_class_accuracy']:.1%}")
    r = s["region_shares"]
    if r["all"]:
        plot_region_bars([("per true class", {**r["per_true_class"], "ALL": r["all"], "(flat map)": r["flat_map"]}),
                          ("per predicted class", r["per_predicted_class"])], out / "regions_per_class.png")
    if s["faithfulness_by_layer"]:
        plot_faithfulness(s["faithfulness_by_layer"], out / "faithfulness.png")
    if s["fairness"]:
        tables = [(attr, {k: v["regions"] for k, v in a["groups"].items() if v["regions"]})
                  for attr, a in s["fairness"]["attributes"].items()]
        tables = [t for t in tables if t[1]]
        if tables:
            plot_region_bars(tables, out / "regions_per_group.png")
    if pictures is None:
        return
    titles = {"true": f"{s['method']} for the predicted class, averaged per TRUE class, over that class's average face",
              "predicted": f"{s['method']} for the predicted class, averaged per PREDICTED class"}
    for kind, (faces, maps, counts) in pictures["class_maps"].items():
        plot_class_maps(faces, maps, counts, labels, out / f"maps_{kind}_class.png", titles[kind])
    if r["all"]:
        tmpl = _upscale(_grey_rgb(pictures["mean_face"]), 192)
        cv2.imwrite(str(out / "regions_template.png"), cv2.cvtColor(draw_regions(tmpl), cv2.COLOR_RGB2BGR))
    if s["confident_mistakes"]:
        plot_mistakes(s["confident_mistakes"], pictures["mistakes"], out / "mistakes.png")
    if s["sanity"] and pictures.get("sanity"):
        plot_sanity(pictures["sanity"], s["settings"]["sanity_stages"], out / "sanity.png")


def write_report(s: dict, out: str | Path, pictures: dict | None = None) -> Path:
    """Draw the figures (draw_figures) and write out/report.html from the summary `s`; returns its path."""
    out = Path(out)
    draw_figures(s, out, pictures)
    return write_html(s, out)


def _road_section(s: dict, num) -> str:
    """The ROAD scores beside the deletion test's (train/road.py), when the audit computed them."""
    by_layer = s.get("faithfulness_by_layer") or {}
    road = {(lay, m): v["road"] for lay, table in by_layer.items() for m, v in table.items() if v.get("road")}
    if not road:
        return "<h3>An independent metric: ROAD</h3><p>Not computed (--road-limit 0).</p>"
    ps = s["settings"]["road_percentiles"]
    removed = ", ".join(f"{100 - p:g}%" for p in ps)
    percentiles = html.escape(", ".join(f"{p:g}" for p in ps))
    parts = [f"""<h3>An independent metric: ROAD</h3><p class="note">On the first {s['settings']['road_images']}
faces of the subset: ROAD (Rong et al. 2022), as pytorch-grad-cam implements it (<code>ROADCombined</code>,
percentiles {percentiles}): the pixels the map ranks highest ({removed} of them, one share at a time) are
filled in by noisy linear imputation (each the weighted mean of its neighbours, plus a little noise), and so,
apart, are those it ranks lowest; the score is (the class logit's change when the least relevant pixels are
filled in minus its change when the most relevant are) / 2, averaged over the shares: <b>higher is more
faithful</b>, in logit units. An inverted map scores about minus its map (the pixels filled in first and last
swap), so a map below 0 does worse than its own inversion. ROAD fills pixels in by noisy linear imputation, the test above
by Telea inpainting without noise, so the two metrics can disagree. Same faces, same maps and
controls, same pixel order (ties broken alike), on the normalised input the model sees. "Map beats the prior":
the map scores above the face prior on the same face (no margin), by each metric; "agree": the share of faces
where both metrics say the same; "good, above prior by ROAD": of the faces judged "good", the share where ROAD
also puts the map above the face prior.</p>"""]
    rows = []
    for (lay, m), r in road.items():
        mean = r["mean"]
        rows.append([f"{m} at {lay}", num(mean["map"]), num(mean["inverted"]), num(mean["face_prior"]),
                     num(mean["other_class"]), num(mean["random"]), _pct(r["map_beats_prior"]["deletion"]),
                     _pct(r["map_beats_prior"]["road"]), _pct(r["agreement"]),
                     f"{_pct(r['good_above_prior'])} of {r['n_good']}", r["n"], num(r["mean_ms"], "{:.0f}")])
    parts.append(_table(["method", "map", "inverted", "face prior", "other class", "random",
                         "map beats prior: deletion", "map beats prior: ROAD", "agree",
                         "good, above prior by ROAD", "n", "ms a face"], rows))
    own = road.get((s["layer"], s["method"]))
    if own and own["agreement"] is not None:
        parts.append(f"<p>For {html.escape(s['method'])} at {html.escape(s['layer'])}: the deletion test says the "
                     f"map beats the face prior on {_pct(own['map_beats_prior']['deletion'])} of faces, ROAD on "
                     f"{_pct(own['map_beats_prior']['road'])}; they agree on <b>{_pct(own['agreement'])}</b> of the "
                     f"{own['n']} faces. Mean ROAD score: map {num(own['mean']['map'])}, face prior "
                     f"{num(own['mean']['face_prior'])}.</p>")
    t = s["timings_s"]
    ms = [r["mean_ms"] for r in road.values() if r["mean_ms"] is not None]
    parts.append(f'<p class="note">ROAD took {num(float(np.mean(ms)) if ms else None, "{:.0f}")} ms a face for one '
                 f"method at one layer on this run's machine ({2 * len(ps)} fillings of each map), "
                 f"{t.get('road_s', 0):.0f} s in all.</p>")
    return "".join(parts)


def whatif_sentences(per_class: dict[str, dict]) -> list[str]:
    """"happy depends on the mouth on 9 faces in 10": per predicted class, the region whose hiding changes
    the label most often, and how often (in tenths when it is at least one face in ten)."""
    out = []
    for c, f in per_class.items():
        if not f:
            continue
        region = max(HIDDEN, key=lambda r: f[r]["flip_rate"])
        rate = f[region]["flip_rate"]
        if rate < 0.05:
            out.append(f"{c}: no single region hidden changes the label on more than 1 face in 20 (n={f['n']}).")
        else:
            tenths = max(1, round(rate * 10))
            out.append(f"{c} depends on the {REGION_LABELS[region]} on {tenths} face{'s' if tenths > 1 else ''} in 10 "
                       f"({rate:.0%} of {f['n']}; hiding it lowers {c} by {f[region]['mean_drop']:.0%} on average).")
    return out


def whatif_section(s: dict) -> str:
    """The report's what-if: each region hidden in turn (emotion/whatif.py), per predicted class."""
    w = s.get("what_if")
    if not w or not w.get("all"):
        return ""
    rows = [[c] + [f"{f[r]['flip_rate']:.0%} / {f[r]['mean_drop']:.0%}" for r in HIDDEN] + [f["n"]]
            for c, f in list(w["per_predicted_class"].items()) + [("all faces", w["all"])] if f]
    items = "".join(f"<li>{html.escape(t)}</li>" for t in whatif_sentences(w["per_predicted_class"]))
    return ("<h2>What if a part of the face were hidden?</h2>"
            '<p class="note">Each region filled in from the skin around it and the face asked again '
            "(emotion/whatif.py). Per class the model answered: how often hiding the region changes the answer, and "
            "how far the answer's probability falls on average. An intervention, not a map: it says what the "
            f"answer depends on.</p><ul>{items}</ul>"
            + _table(["predicted class"] + [f"hide {REGION_LABELS[r]}: flips / drop" for r in HIDDEN] + ["n"], rows))


def write_html(s: dict, out: Path) -> Path:
    """out/report.html from the summary `s`, showing the figures found in `out`."""
    n_mistakes = len(s["confident_mistakes"])
    support = np.array(s["confusion_matrix"]).sum(1)
    parts = [f"""<!doctype html><html><head><meta charset="utf-8"><title>Model audit</title><style>
body{{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:.6em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
th{{background:#f3f3f3}}td:first-child{{text-align:left}}img{{max-width:100%}}.note{{color:#555;font-size:.92em}}
h2{{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}}</style></head><body>
<h1>Model audit</h1>
<p class="note">Model: {html.escape(str(s['weights']))}<br>Data: {html.escape(str(s['dataset']))}
{html.escape(str(s['split']))}, {s['n']} images ({'largest face detected' if s['detect_faces'] else 'each picture taken as the face'};
no face: {s['no_face']}, unreadable: {s['unreadable']}). Heatmaps: {html.escape(s['method'])} at {html.escape(s['layer'])}.</p>
<h2>Accuracy</h2><p><b>Accuracy {s['accuracy']:.1%}</b>, mean-class accuracy {s['mean_class_accuracy']:.1%}.</p>"""]
    parts.append(_table(["class", "accuracy", "n"], [[c, _pct(v), int(n)] for (c, v), n in
                                                     zip(s["per_class_accuracy"].items(), support)]))
    parts.append(_img(out, "confusion_matrix.png", "confusion matrix"))

    parts.append("""<h2>Where the heatmaps look, per class</h2><p class="note">Each class's average face with the
average heatmap (for the predicted class) of its images. Per true class: what the model looks at when it
sees that emotion; per predicted class: what makes it say that emotion.</p>""")
    parts.append(_img(out, "maps_true_class.png", "average heatmap per true class"))
    parts.append(_img(out, "maps_predicted_class.png", "average heatmap per predicted class"))

    parts.append("<h2>Face regions</h2>")
    r = s["region_shares"]
    if r["all"]:
        parts.append(f"""<p>On average <b>{r['all']['outside_face']:.1%}</b> of the heatmap mass falls outside the
face, {r['all']['eyes_brows']:.1%} on eyes and brows, {r['all']['nose']:.1%} on the nose,
{r['all']['mouth']:.1%} on the mouth and {r['all']['rest_of_face']:.1%} on the rest of the face.
For comparison, a flat map that looks everywhere equally would put {r['flat_map']['outside_face']:.1%} outside the
face, {r['flat_map']['eyes_brows']:.1%} on eyes and brows and {r['flat_map']['mouth']:.1%} on the mouth (the regions'
shares of the crop's area): only shares above these mean the model seeks a region out.</p>
<p class="note">Regions come from the detector's five landmarks (eyes, nose tip, mouth corners) and face box;
pictures taken whole as the face use a fixed landmark template measured on FER2013 (emotion/regions.py).
The template regions over the average face:</p>""")
        parts.append(_img(out, "regions_template.png", "regions"))
        parts.append(_table(["true class"] + [REGION_LABELS[k] for k in REGIONS],
                            [[c] + [_pct(v[k]) for k in REGIONS] for c, v in r["per_true_class"].items()]
                            + [["all images"] + [_pct(r["all"][k]) for k in REGIONS],
                               ["(flat map: area)"] + [_pct(r["flat_map"][k]) for k in REGIONS]]))
        parts.append(_img(out, "regions_per_class.png", "region shares per class"))
    else:
        parts.append("<p>No heatmap had any mass.</p>")

    parts.append(whatif_section(s))

    parts.append("<h2>Most confident mistakes</h2>")
    if n_mistakes:
        parts.append("""<p class="note">Each: the face; the map for the class the model chose, with its
probability; the map for the true class with its probability ("why not the true class?": what evidence
for it the model found).</p>""")
        parts.append(_img(out, "mistakes.png", "confident mistakes"))
        parts.append(_table(["image", "true", "predicted", "confidence", "p(true)"],
                            [[Path(m["source"]).name, m["true"], m["pred"], _pct(m["confidence"]), _pct(m["p_true"])]
                             for m in s["confident_mistakes"]]))
    else:
        parts.append("<p>No mistakes.</p>")

    parts.append("""<h2>Faithfulness: do the maps point at this face's evidence for the class?</h2><p class="note">
Per image, the pixels each map ranks highest (10%, 25%, 50%) are filled in from the rest of the face (Telea
inpainting: a perturbation no map is made with), and the drop of the
predicted class's logit is recorded; the score is the area under that deletion curve (the mean drop, in logit
units; emotion/faithfulness.py). The same test is run on three controls that carry no evidence about this face
and this class: the face prior (the method's mean map over training faces predicted as the class), the same
method's map for the most likely other class, and RandomCAM maps. A map is judged "good" only when it beats every
control (the prior's and the other class's map's drop 1 + margin times over), "weak" when it only beats the random
maps. Each model's margin per method and layer is calibrated on training faces and stored beside its face prior
(without one: """ + f"{MARGIN:g}" + """ for every method): the smallest at which maps without the face's evidence pass
as "good" so seldom that the 95% interval of that rate ends at or under 5%.
The false-"good" rate is how often a map without this face's evidence is judged "good": another face's map
("shuffled") and the inverted map (1 - map); the larger of the two is reported with its 95% Wilson interval,
whose upper end must stay at or under 5%.</p>""")
    by_layer = s.get("faithfulness_by_layer") or {}
    if by_layer:
        num = lambda v, f="{:.3f}": "n/a" if v is None else f.format(v)  # noqa: E731
        rows = []
        for lay, table in by_layer.items():
            for m, v in table.items():
                c = v["controls"]
                rows.append([f"{m} at {lay}", num(v["mean_score"]), num(c.get("face_prior")), num(c.get("other_class")),
                             num(c.get("random")), _margin(v.get("margin")),
                             _with_ci(v["share_good"], v.get("share_good_ci95")), _pct(v["share_weak"]),
                             _pct(v["share_chance"]), _pct(v["share_untestable"]), _pct(v["share_empty"]),
                             _pct(v["false_good"]["shuffled"]), _pct(v["false_good"]["inverted"]),
                             _with_ci(v["false_good_rate"], v.get("false_good_ci95")), v["n"]])
        parts.append(_table(["method", "map", "face prior", "other class", "random", "margin", "good (95% interval)",
                             "weak", "chance", "untestable", "empty", "false good: shuffled", "false good: inverted",
                             "false good, the worse (95% interval)", "n"], rows))
        own = (by_layer.get(s["layer"]) or {}).get(s["method"])
        if own and own["mean_score"] is not None and own["controls"].get("face_prior") is not None \
                and own["mean_score"] <= own["controls"]["face_prior"]:
            parts.append(f"<p><b>Finding: {html.escape(s['method'])}'s maps at {html.escape(s['layer'])} do not beat the face "
                         f"prior</b> (mean drop {own['mean_score']:.3f} against {own['controls']['face_prior']:.3f} for the "
                         "class's average map): they show where this model usually looks for a class, not evidence "
                         "found in each face.</p>")
        rec = s.get("recommended")
        if rec:
            parts.append(f"<p>Judged \"good\" most often, among those whose false-\"good\" rate's 95% interval ends at or "
                         f"below {s['settings']['max_false_good']:.0%}: <b>{html.escape(rec['method'])} at "
                         f"{html.escape(rec['layer'])}</b> ({_with_ci(rec['share_good'], rec.get('share_good_ci95'))} "
                         f"of faces; false-\"good\" rate {_with_ci(rec['false_good_rate'], rec.get('false_good_ci95'))})."
                         "</p>")
        parts.append(_img(out, "faithfulness.png", "faithfulness"))
        parts.append(_road_section(s, num))
    else:
        parts.append("<p>Skipped.</p>")

    parts.append("""<h2>Sanity check: model randomisation</h2><p class="note">After Adebayo et al. (2018): the top
layers are re-initialised (cascading: first fc, then fc and layer4) and the map for the same class is
computed again. If the maps of a model that knows nothing still correlate strongly with the trained
model's, the method shows the picture's structure, not what the model learned. Spearman rank correlation
of the pixels, averaged over images (close to 0 is good; constant maps, where it is undefined, are
counted apart).</p>""")
    if s["sanity"]:
        parts.append(_table(["randomised", "mean rank correlation", "mean |rank correlation|", "n", "constant maps"],
                            [[k, "n/a" if v["mean_rank_correlation"] is None else f"{v['mean_rank_correlation']:.3f}",
                              "n/a" if v["mean_abs_rank_correlation"] is None else f"{v['mean_abs_rank_correlation']:.3f}",
                              v["n"], v["constant_maps"]] for k, v in s["sanity"].items()]))
        parts.append(_img(out, "sanity.png", "sanity check examples"))
    else:
        parts.append("<p>Skipped.</p>")

    parts.append("<h2>Fairness</h2>")
    fair = s["fairness"]
    if not fair:
        parts.append("""<p><b>No groups file was given, so nothing is known about how the model does for different
groups of people.</b> Pass <code>--groups groups.csv</code> (a column <code>image</code>, then one column per
attribute such as gender, race or age) to measure it. FER2013 ships no such labels; RAF-DB does (its manual
annotations, read with <code>--dataset rafdb</code>).</p>""")
    else:
        parts.append(f"""<p class="note">Groups from {html.escape(fair['groups_file'])}: {fair['matched']} images
matched, {fair['unmatched']} not (left out). The gap is the largest difference between two groups of an attribute
(groups under {s['settings']['min_group_size']} images are shown but not compared); the interval is a 95% bootstrap
interval of that gap (resampling images within each group); p is the share of random reassignments of the
group labels giving a gap at least as large (small p: the gap is unlikely to be chance alone). The largest of
several noisy gaps is above 0 even when the groups do not differ, so its interval rarely reaches 0: judge whether a
gap is real by p, and its likely size by the interval.</p>""")
        verdict_note = (f"Verdicts: the faithfulness verdicts of {html.escape(s['method'])} at {html.escape(s['layer'])} "
                        "(shares of the group's faces in the faithfulness subset, judged n).")
        for attr, a in fair["attributes"].items():
            parts.append(f"<h3>{html.escape(attr)}</h3>")
            parts.append(_table(["group", "n", "accuracy", "mean-class accuracy"] + [REGION_LABELS[k] for k in REGIONS]
                                + ["judged n"] + list(LEVELS),
                                [[g, v["n"], _pct(v["accuracy"]), _pct(v["mean_class_accuracy"])]
                                 + [_pct(v["regions"][k]) if v["regions"] else "n/a" for k in REGIONS]
                                 + [v["verdicts"]["n"]] + [_pct(v["verdicts"][k]) for k in LEVELS]
                                 for g, v in a["groups"].items()]))
            parts.append(f'<p class="note">{verdict_note}</p>')
            for g, v in a["groups"].items():
                columns = s.get("confusion_columns") or list(s["per_class_accuracy"]) + ["no answer"]
                parts.append(f"<details><summary>confusion matrix: {html.escape(attr)} {html.escape(g)} "
                             f"(n={v['n']})</summary>"
                             + _table(["true \\ predicted"] + columns,
                                      [[c] + row for c, row in zip(s["per_class_accuracy"], v["confusion_matrix"])])
                             + "</details>")
            gaps = a.get("what_if_gaps") or {}
            if any("gap" in gp for gp in gaps.values()):
                parts.append(_table(["what-if: hiding", "changes the label, per group", "largest gap", "between",
                                     "95% interval", "p"],
                                    [[REGION_LABELS[r], ", ".join(f"{html.escape(g)} {_pct(v)}" for g, v in gp["rates"].items()),
                                      f"{gp['gap']:.1%}", f"{gp['highest']} vs {gp['lowest']}",
                                      f"{gp['ci95'][0]:.1%} to {gp['ci95'][1]:.1%}", f"{gp['p_value']:.3f}"]
                                     for r, gp in gaps.items() if "gap" in gp]))
            if "accuracy_gap" in a:
                rows = []
                for key, name in (("accuracy_gap", "accuracy"), ("mean_class_accuracy_gap", "mean-class accuracy")):
                    gp = a[key]
                    rows.append([name, f"{gp['gap']:.1%}", f"{gp['best']} vs {gp['worst']}",
                                 f"{gp['ci95'][0]:.1%} to {gp['ci95'][1]:.1%}", f"{gp['p_value']:.3f}"])
                parts.append(_table(["largest gap in", "gap", "between", "95% interval", "p"], rows))
            else:
                parts.append(f"<p>{html.escape(a.get('note', ''))}</p>")
        parts.append(_img(out, "regions_per_group.png", "region shares per group"))

    t = s["timings_s"]
    parts.append(f"<h2>Run</h2><p class=\"note\">Processes: {s.get('world_size', 1)}. Timings (s): {html.escape(json.dumps(t))}. Settings: "
                 f"{html.escape(json.dumps(s['settings']))}.</p></body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path


# ---------------------------------------------------------------- the documentation's figures (docs/trust.md)
README_BEGIN = "<!-- verdict figures: written by python -m train.report AUDIT --readme docs/trust.md; do not edit -->"
README_END = "<!-- end of verdict figures -->"
KEPT = ("dataset", "split", "n", "accuracy", "mean_class_accuracy", "weights", "method", "layer",
        "faithfulness_by_layer", "recommended", "sanity", "sanity_rank_correlation", "settings", "world_size")


def aggregate(s: dict) -> dict:
    """The summary's figures over all faces (what docs/trust.md quotes), without anything face by face."""
    return {k: s.get(k) for k in KEPT}


def _p(v, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}%}"


def _with_ci(v, ci) -> str:
    """A rate with its 95% interval: "4.0% (1.9% to 7.3%)"."""
    return _p(v) if v is None or not ci else f"{_p(v)} ({_p(ci[0])} to {_p(ci[1])})"


def _margin(g) -> str:
    return "never good" if g is None else f"{g:g}"


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def readme_figures(s: dict) -> str:
    """The paragraph of docs/trust.md on how far the verdict can be trusted, from one audit's summary (or its
    `aggregate`): every layer and method measured, the default's standing against the false-"good" bound,
    the audit's recommendation, the sanity check and ROAD's agreement."""
    st = s["settings"]
    bound = st.get("max_false_good", 0.05)
    lines = [f"Measured by one audit of the shipped model (`weights/audit.json`): {s['dataset']} {s['split']}, "
             f"{st['faithfulness_images']} faces for the verdict, {st.get('road_images', 0)} of them also "
             f"scored by ROAD, {st['sanity_images']} for the sanity check.", "",
             "| method, layer | logit drop: map | face prior | other class | random | margin | good (95% interval) "
             "| weak | chance | false good (95% interval) | ROAD: map | ROAD: face prior | metrics agree |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for lay, table in s["faithfulness_by_layer"].items():
        for m, v in table.items():
            c, road = v["controls"], v.get("road") or {}
            mean = road.get("mean") or {}
            lines.append(f"| {m}, {lay} | {_f(v['mean_score'])} | {_f(c.get('face_prior'))} | "
                         f"{_f(c.get('other_class'))} | {_f(c.get('random'))} | {_margin(v.get('margin'))} | "
                         f"{_with_ci(v['share_good'], v.get('share_good_ci95'))} | "
                         f"{_p(v['share_weak'])} | {_p(v['share_chance'])} | "
                         f"{_with_ci(v['false_good_rate'], v.get('false_good_ci95'))} | "
                         f"{_f(mean.get('map'))} | {_f(mean.get('face_prior'))} | {_p(road.get('agreement'), 0)} |")
    default = s["faithfulness_by_layer"].get(s["layer"], {}).get(s["method"])
    lines.append("")
    table_end = len(lines)  # then one paragraph
    if default:
        fg, ci = default["false_good_rate"], default.get("false_good_ci95")
        promise = ("its interval within" if ci is not None and ci[1] <= bound else
                   "but its interval reaches above" if fg is not None and fg <= bound else "above")
        lines.append(f"The app's default, {s['method']} at {s['layer']}, is judged good on "
                     f"{_with_ci(default['share_good'], default.get('share_good_ci95'))} of faces; maps without the "
                     f"face's evidence passed as good {_with_ci(fg, ci)} of the time, {promise} the {bound:.0%} the "
                     "verdict is meant to hold to.")
    rec = s.get("recommended")
    lines.append(f"The audit recommends {rec['method']} at {rec['layer']} (the most good verdicts among those whose "
                 f"false-good interval ends within {bound:.0%})." if rec else "No method and layer measured keeps the "
                 f"false-good interval within {bound:.0%}, so the audit recommends none.")
    if default and default.get("road"):
        r = default["road"]
        lines.append(f"ROAD (pytorch-grad-cam's, higher is better) and the app's deletion test agree on "
                     f"whether the map beats the face prior on {_p(r['agreement'], 0)} of {r['n']} faces "
                     f"(deletion says it does on {_p(r['map_beats_prior']['deletion'], 0)}, ROAD on "
                     f"{_p(r['map_beats_prior']['road'], 0)}).")
    if s.get("sanity_rank_correlation") is not None:
        last = st["sanity_stages"][-1]
        lines.append(f"Re-initialising {last} leaves the maps a rank correlation of "
                     f"{s['sanity_rank_correlation']:.2f} with the trained model's (near 0: the maps depend on "
                     "what the model learned).")
    return "\n".join(lines[:table_end] + [" ".join(lines[table_end:])])


def write_readme(readme: str | Path, s: dict) -> None:
    """Put `readme_figures(s)` between the markers of a Markdown page (the project's is docs/trust.md, "How far to
    trust a heatmap")."""
    readme = Path(readme)
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{readme} has no place for the figures: add the lines {README_BEGIN!r} and {README_END!r}")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(head + README_BEGIN + "\n" + readme_figures(s) + "\n" + README_END + tail)


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(prog="python -m train.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="an audit's folder (python -m train.audit --out), holding summary.json")
    p.add_argument("--readme", default=None,
                   help="also write the verdict figures into this Markdown page's marked place (docs/trust.md)")
    p.add_argument("--keep", default=None, help="and the summary's figures over all faces into this JSON file "
                   "(e.g. weights/audit.json)")
    args = p.parse_args(argv)
    out = Path(args.out)
    summary = json.loads((out / "summary.json").read_text())
    path = write_report(summary, out)
    print(f"report: {path}")
    if args.keep:
        Path(args.keep).write_text(json.dumps(aggregate(summary), indent=2) + "\n")
        print(f"figures: {args.keep}")
    if args.readme:
        write_readme(args.readme, summary)
        print(f"verdict figures: {args.readme}")
    return path


if __name__ == "__main__":
    main()
