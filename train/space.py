"""The Hugging Face Space's file set: what a Gradio Space needs to run the app, and nothing else.

`build_space(dest, model_repo)` writes it into a folder: the app, the runtime library (`emotion/`), the
example photos, `requirements.txt`, the documentation the README links to (`docs/`) and the README with the
Space's front matter for `model_repo` (its link to the model card pointed at the model's page on the Hub). The
deploy (`python -m train.push --space`) uploads exactly that folder, and tests/test_space.py starts the app
from it, so what is tested is what is deployed. Never weights, data, tests, CI, tools or run folders: the
Space loads its model from the Hub (`EMOTION_MODEL=hf-hub:...`), fetched when the Space is built.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from emotion.model import CONFIG_FILE, ENV_VAR, WEIGHTS_FILE

ROOT = Path(__file__).resolve().parent.parent
# (folder, glob) pairs relative to the project root: the app and everything it imports or reads (the runtime
# package with its data files, e.g. a face prior the faithfulness check loads)
# and the documentation the README (the Space's card) links to, with its pictures
INCLUDE = (("", "app.py"), ("", "requirements.txt"), ("emotion", "**/*"), ("examples", "*.jpg"),
           ("examples", "*.png"), ("docs", "**/*.md"), ("docs", "assets/*"))
SKIP = ("__pycache__", ".pyc")
PYTHON_VERSION = "3.11"  # yuface has wheels for CPython up to 3.11
REPO_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def gradio_version(root: Path = ROOT) -> str:
    """The gradio version pinned in requirements.txt (the Space's `sdk_version` must match it)."""
    m = re.search(r"^gradio==([\w.]+)", (root / "requirements.txt").read_text(), re.M)
    if not m:
        raise ValueError("requirements.txt must pin gradio (gradio==X.Y.Z) for the Space's sdk_version.")
    return m.group(1)


def check_repo_name(name: str, what: str) -> str:
    if not REPO_NAME.match(name or ""):
        raise ValueError(f"{what} must look like OWNER/NAME, got {name!r}.")
    return name


def split_front_matter(text: str) -> tuple[str, str]:
    """(front matter without its --- lines, the rest of the markdown)."""
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    return (m.group(1), text[m.end():]) if m else ("", text)


def space_readme(model_repo: str, root: Path = ROOT) -> str:
    """The project README with the Space's front matter: Gradio SDK at the pinned version, Python 3.11,
    the model repo linked and its config and weights fetched when the Space is built."""
    check_repo_name(model_repo, "--model-repo")
    front, body = split_front_matter((root / "README.md").read_text())
    keep = [line for line in front.splitlines()
            if line.split(":")[0] in ("title", "emoji", "colorFrom", "colorTo", "pinned", "license",
                                      "short_description")]
    lines = ["---", *keep, "sdk: gradio", f"sdk_version: {gradio_version(root)}",
             f'python_version: "{PYTHON_VERSION}"', "app_file: app.py",
             "models:", f"  - {model_repo}",
             "preload_from_hub:", f"  - {model_repo} {CONFIG_FILE},{WEIGHTS_FILE}", "---"]
    # the model card is not among the Space's files: its links go to the model's own page on the Hub
    body = re.sub(r"\]\(weights/README\.md\)", f"](https://huggingface.co/{model_repo})", body)
    return "\n".join(lines) + "\n" + body


def space_variables(model_repo: str) -> dict[str, str]:
    return {ENV_VAR: f"hf-hub:{check_repo_name(model_repo, '--model-repo')}"}


def space_sources(root: Path = ROOT) -> list[Path]:
    """The project files copied as they are (the README is written separately)."""
    out = []
    for folder, pattern in INCLUDE:
        out += sorted(p for p in (root / folder).glob(pattern)
                      if p.is_file() and not any(s in p.as_posix() for s in SKIP))
    return out


def build_space(dest: Path, model_repo: str, root: Path = ROOT) -> list[str]:
    """Write the Space's files into `dest` (which must be empty or missing); return their paths, sorted."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty.")
    (dest / "README.md").write_text(space_readme(model_repo, root))
    for src in space_sources(root):
        target = dest / src.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
