"""The documentation site (mkdocs.yml, docs/) builds with `mkdocs build --strict`: a link to a missing page or
heading, or a page left out of the nav, fails the build, and so this test. The README is not part of the site,
so its links into the repository are checked here."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice on stderr, not a build warning
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(root / "mkdocs.yml"), "--site-dir", str(site)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_site_builds_without_a_warning(tmp_path):
    r = build(ROOT, tmp_path / "site")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARNING" not in r.stdout + r.stderr, r.stdout + r.stderr
    pages = sorted(p.relative_to(ROOT / "docs").with_suffix("").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    for page in pages:  # every page became a page of the site
        assert (tmp_path / "site" / ("index.html" if page == "index" else f"{page}/index.html")).is_file(), page


@pytest.mark.parametrize("breakage", ["missing page", "missing heading", "page not in the nav"])
def test_a_broken_link_or_a_stray_page_fails_the_build(tmp_path, breakage):
    """The strictness is real: the same site with one fault in it does not build."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copyfile(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    if breakage == "page not in the nav":
        (copy / "docs" / "stray.md").write_text("# A page nobody links to\n")
    else:
        target = "nowhere.md" if breakage == "missing page" else "app.md#no-such-heading"
        with (copy / "docs" / "index.md").open("a") as f:
            f.write(f"\nSee [this]({target}).\n")
    r = build(copy, tmp_path / "site")
    assert r.returncode != 0 and "WARNING" in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_readmes_links_and_picture_are_there():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert "docs/assets/result.jpg" in local and "docs/index.md" in local
    missing = [t for t in local if t and not (ROOT / t).is_file()]
    assert not missing, f"the README links to files that are not there: {missing}"
    assert (ROOT / "docs" / "assets" / "result.jpg").stat().st_size < 150_000  # small enough for a README


def test_the_headline_figures_are_the_model_cards_own():
    """The FER+ PrivateTest rows of the README and of docs/model.md give what weights/results.json holds (the
    figures `train.evaluate --card` wrote): accuracy, its 95% interval and mean-class accuracy to a tenth of a
    point, and how many faces the detector did not find."""
    ev = json.loads((ROOT / "weights" / "results.json").read_text())["evaluations"]
    pages = {name: (ROOT / name).read_text().splitlines() for name in ("README.md", "docs/model.md")}
    rows = (("ferplus private_test", "balanced", "FER crops as they are", "**"),
            ("ferplus private_test (faces detected)", "balanced", "face detector and crop", "**"),
            ("ferplus private_test", "prior", "by the training prior", ""))
    for key, rule, words, bold in rows:
        m = ev[key]
        r = m["readings"][rule]
        lo, hi = r["accuracy_ci95"]
        figures = f"| {bold}{r['accuracy']:.1%}{bold} | {lo:.1%} to {hi:.1%} | "
        for name, lines in pages.items():
            line = next(ln for ln in lines if ln.startswith("|") and words in ln)
            assert figures in line and f"{r['mean_class_accuracy']:.1%}" in line.rsplit("|", 2)[1], (name, line)
            if "detected" in key:
                assert f"({m['no_face']} not found, counted wrong)" in line, (name, line)
