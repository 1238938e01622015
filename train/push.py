"""Publish to the Hugging Face Hub: the model (safetensors, config and card, never a pickle), or the app as a
Gradio Space that loads that model from the Hub.

    python -m train.push --weights weights --repo owner/emotion-resnet50            # the model
    python -m train.push --space owner/emotion-demo --model-repo owner/emotion-resnet50   # the Space
    ... --dry-run   # print the plan and touch nothing

The token is found as huggingface_hub finds it: $HF_TOKEN, else the one `hf auth login` stored.
The model loads back with `python app.py --model hf-hub:owner/emotion-resnet50` or
`timm.create_model("hf-hub:owner/emotion-resnet50", pretrained=True)`.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from emotion.model import CONFIG_FILE, FACE_PRIOR_FILE, WEIGHTS_FILE, load_model
from train.space import build_space, check_repo_name, space_variables

ALLOWED = [WEIGHTS_FILE, CONFIG_FILE, FACE_PRIOR_FILE, "README.md", "results.json", "*.png"]
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}
NO_TOKEN = ("No Hugging Face token found: run `hf auth login` (or set HF_TOKEN) with a token that has "
            "write access.")


def files_to_push(folder: Path) -> list[Path]:
    """What goes up: the allowed names only. The folder must hold a loadable model."""
    load_model(folder, fallback=False)  # refuse to publish what would not load
    keep = [p for p in sorted(folder.iterdir()) if p.is_file() and any(p.match(g) for g in ALLOWED)]
    assert not any(p.suffix in PICKLE_SUFFIXES for p in keep)
    return keep


def space_plan(space: str, model_repo: str) -> dict:
    """What `--space` would do: the Space's files (as build_space writes them) and its variables."""
    check_repo_name(space, "--space")
    with tempfile.TemporaryDirectory(prefix="space-") as tmp:
        files = build_space(Path(tmp) / "space", model_repo)
    return {"repo": space, "repo_type": "space", "files": files, "variables": space_variables(model_repo)}


def hub_api(endpoint: str | None):
    """An HfApi with a token that works, checked before anything is created: else SystemExit, at once."""
    from huggingface_hub import HfApi, get_token

    token = get_token()  # $HF_TOKEN, else the token file `hf auth login` wrote under $HF_HOME
    if not token:
        raise SystemExit(NO_TOKEN)
    source = "HF_TOKEN" if os.environ.get("HF_TOKEN") else "the token stored by `hf auth login`"
    api = HfApi(endpoint=endpoint, token=token)
    try:
        user = api.whoami()["name"]
    except Exception as e:  # offline, unreachable, or a token the Hub refuses: all say the same kind of thing
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SystemExit(f"Could not reach the Hugging Face Hub with {source} ({first}). Check the network "
                         "and that the token is valid; nothing was uploaded.") from None
    print(f"signed in to the Hub as {user} ({source})")
    return api


def push_model(args) -> list[Path]:
    folder = Path(args.weights)
    files = files_to_push(folder)
    skipped = sorted(set(x.name for x in folder.iterdir() if x.is_file()) - {f.name for f in files})
    print("will upload: " + ", ".join(f.name for f in files) + (f"; skipping: {', '.join(skipped)}" if skipped else ""))
    if args.dry_run:
        return files
    api = hub_api(args.endpoint)
    repo = api.create_repo(args.repo, private=args.private, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=repo.repo_id, folder_path=folder, allow_patterns=[f.name for f in files],
                             commit_message=args.message)
    print(f"pushed to {repo.repo_id}: {info}")
    return files


def push_space(args) -> dict:
    plan = space_plan(args.space, args.model_repo)
    if args.dry_run:
        print(json.dumps(plan))
        return plan
    api = hub_api(args.endpoint)
    repo = api.create_repo(args.space, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="space-") as tmp:
        build_space(Path(tmp) / "space", args.model_repo)
        # delete_patterns: files of an earlier deploy that are no longer part of the app go away
        api.upload_folder(repo_id=repo.repo_id, repo_type="space", folder_path=Path(tmp) / "space",
                          delete_patterns="*", commit_message="Deploy the app (python -m train.push --space)")
    for key, value in plan["variables"].items():
        api.add_space_variable(repo.repo_id, key, value)
    print(f"deployed {repo.repo_id}: https://huggingface.co/spaces/{repo.repo_id} (model {args.model_repo})")
    return plan


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.push", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights", help="model folder to push with --repo")
    p.add_argument("--repo", help="push the model to this owner/name")
    p.add_argument("--space", help="deploy the app to this owner/name Space ...")
    p.add_argument("--model-repo", help="... loading its model from this owner/name model repo")
    p.add_argument("--private", action="store_true")
    p.add_argument("--message", default="Upload emotion classifier (timm ResNet50, safetensors)")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded and stop")
    p.add_argument("--endpoint", default=None, help="Hub address (default: huggingface_hub's, or $HF_ENDPOINT)")
    args = p.parse_args(argv)
    if bool(args.repo) == bool(args.space):
        p.error("give either --repo (push the model) or --space with --model-repo (deploy the app)")
    if args.space and not args.model_repo:
        p.error("--space needs --model-repo OWNER/MODEL: the Space loads its model from there")
    try:
        return push_space(args) if args.space else push_model(args)
    except ValueError as e:
        raise SystemExit(str(e)) from None


if __name__ == "__main__":
    main()
