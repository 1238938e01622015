"""The documentation's figures on how far the heatmap verdict can be trusted (docs/trust.md, "How far to trust a
heatmap") are generated from one audit's summary (train/report.py's `readme_figures`), never typed: the page holds
exactly what `weights/audit.json` gives, and the words follow the figures (a default above the false-"good" bound
is said to be above it)."""
from __future__ import annotations

import json
from pathlib import Path

from train.report import README_BEGIN, README_END, readme_figures, write_readme

ROOT = Path(__file__).resolve().parent.parent


def _summary(false_good: float, recommended: dict | None, high: float | None = None) -> dict:
    """One method and layer's figures; `false_good` and its interval's upper end `high` (default: the rate + 2%)."""
    row = {"mean_score": 1.5, "controls": {"face_prior": 1.2, "other_class": 0.9, "random": 0.8}, "margin": 0.75,
           "share_good": 0.25, "share_good_ci95": [0.14, 0.41], "share_weak": 0.5, "share_chance": 0.25,
           "false_good_rate": false_good, "false_good_ci95": [false_good / 2, false_good + 0.02 if high is None else high],
           "road": {"mean": {"map": 0.4, "face_prior": 0.3}, "n": 10, "agreement": 0.7,
                    "map_beats_prior": {"deletion": 0.6, "road": 0.5}}}
    return {"dataset": "ferplus", "split": "public_test", "method": "Grad-CAM", "layer": "layer3",
            "faithfulness_by_layer": {"layer3": {"Grad-CAM": row}}, "recommended": recommended,
            "sanity_rank_correlation": 0.12,
            "settings": {"faithfulness_images": 40, "road_images": 10, "sanity_images": 5, "max_false_good": 0.05,
                         "sanity_stages": ["layer4", "layer4+layer3"]}}


def test_the_words_follow_the_figures():
    above = readme_figures(_summary(0.075, None))
    assert ("| Grad-CAM, layer3 | 1.50 | 1.20 | 0.90 | 0.80 | 0.75 | 25.0% (14.0% to 41.0%) | 50.0% | 25.0% | "
            "7.5% (3.8% to 9.5%) | 0.40 | 0.30 | 70% |") in above
    assert "passed as good 7.5% (3.8% to 9.5%) of the time, above the 5% " in above and "recommends none" in above
    assert "agree on whether the map beats the face prior on 70% of 10 faces" in above
    assert "Re-initialising layer4+layer3 leaves the maps a rank correlation of 0.12" in above
    # a rate under the bound whose interval reaches over it is not said to hold
    reaching = readme_figures(_summary(0.03, None, high=0.07))
    assert "3.0% (1.5% to 7.0%) of the time, but its interval reaches above the 5% " in reaching
    within = readme_figures(_summary(0.02, {"method": "Grad-CAM", "layer": "layer3"}))
    assert "2.0% (1.0% to 4.0%) of the time, its interval within the 5% " in within
    assert "recommends Grad-CAM at layer3" in within


def test_write_readme_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{README_BEGIN}\nold figures typed by hand\n{README_END}\nafter\n")
    write_readme(readme, _summary(0.04, None))
    text = readme.read_text()
    assert text.startswith("before\n" + README_BEGIN + "\n") and text.endswith(README_END + "\nafter\n")
    assert "typed by hand" not in text and "| Grad-CAM, layer3 | 1.50 |" in text


def test_the_shipped_audit_is_of_the_apps_default_heatmaps():
    from emotion.explain import DEFAULT_LAYER, DEFAULT_METHOD

    s = json.loads((ROOT / "weights" / "audit.json").read_text())
    assert (s["method"], s["layer"]) == (DEFAULT_METHOD, DEFAULT_LAYER.split()[0])
    assert s["sanity"] and s["faithfulness_by_layer"][s["layer"]][s["method"]]["n"] >= 150


def test_the_trust_page_holds_the_shipped_audits_figures():
    text = (ROOT / "docs" / "trust.md").read_text()
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1  # one marked place, named in its marker
    assert "--readme docs/trust.md" in README_BEGIN and "--readme docs/trust.md" in text.replace(README_BEGIN, "")
    block = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip("\n")
    assert block == readme_figures(json.loads((ROOT / "weights" / "audit.json").read_text()))
