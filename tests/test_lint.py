"""The linter: `ruff check` over the project with ruff.toml's rules finds nothing, and the pre-commit hook runs
the same ruff version as requirements-dev.txt installs (so a commit is checked as CI checks it)."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def pinned_ruff() -> str:
    m = re.search(r"^ruff==([\w.]+)", (ROOT / "requirements-dev.txt").read_text(), re.M)
    assert m, "requirements-dev.txt must pin ruff (ruff==X.Y.Z)"
    return m.group(1)


def test_ruff_finds_nothing():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_hook_and_the_tests_run_the_same_ruff():
    version = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True).stdout
    assert version.split() == ["ruff", pinned_ruff()]  # the ruff installed here is the pinned one
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (hook,) = [r for r in config["repos"] if r["repo"] == "https://github.com/astral-sh/ruff-pre-commit"]
    assert hook["rev"] == f"v{pinned_ruff()}"
    assert [h["id"] for h in hook["hooks"]] == ["ruff-check"]
