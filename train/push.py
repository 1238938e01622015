"""Upload a model folder to the Hugging Face Hub: safetensors, config and card only, never a pickle.

    HF_TOKEN=hf_... python -m train.push --weights weights --repo owner/emotion-resnet50
    python -m train.push --weights weights --repo owner/emotion-resnet50 --dry-run   # list what would go

Loads back with `python app.py --model hf-hub:owner/emotion-resnet50` or
`timm.create_model("hf-hub:owner/emotion-resnet50", pretrained=True)`.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from emotion.model import CONFIG_FILE, WEIGHTS_FILE, load_model

ALLOWED = [WEIGHTS_FILE, CONFIG_FILE, "README.md", "results.json", "*.png"]
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


def files_to_push(folder: Path) -> list[Path]:
    """What goes up: the allowed names only. The folder must hold a loadable model."""
    load_model(folder, fallback=False)  # refuse to publish what would not load
    keep = [p for p in sorted(folder.iterdir()) if p.is_file() and any(p.match(g) for g in ALLOWED)]
    assert not any(p.suffix in PICKLE_SUFFIXES for p in keep)
    return keep


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.push", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights")
    p.add_argument("--repo", required=True, help="owner/name on the Hub")
    p.add_argument("--private", action="store_true")
    p.add_argument("--message", default="Upload emotion classifier (timm ResNet50, safetensors)")
    p.add_argument("--dry-run", action="store_true", help="list the files and stop")
    p.add_argument("--endpoint", default=None, help="Hub address (default: huggingface_hub's, or $HF_ENDPOINT)")
    args = p.parse_args(argv)
    folder = Path(args.weights)
    files = files_to_push(folder)
    skipped = sorted(set(x.name for x in folder.iterdir() if x.is_file()) - {f.name for f in files})
    print("will upload: " + ", ".join(f.name for f in files) + (f"; skipping: {', '.join(skipped)}" if skipped else ""))
    if args.dry_run:
        return files
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise SystemExit("Set HF_TOKEN to a Hugging Face token with write access.")
    from huggingface_hub import HfApi

    api = HfApi(endpoint=args.endpoint, token=token)
    repo = api.create_repo(args.repo, private=args.private, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=repo.repo_id, folder_path=folder, allow_patterns=[f.name for f in files],
                             commit_message=args.message)
    print(f"pushed to {repo.repo_id}: {info}")
    return files


if __name__ == "__main__":
    main()
