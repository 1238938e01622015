"""Split a model folder's weights into small safetensors pieces and join them back (for size-capped transfers).

    python -m train.shards split weights/ OUTDIR --max-mb 15   # model-00001.safetensors ... + config, card
    python -m train.shards join OUTDIR weights/                 # model.safetensors again, checked

The pieces are ordinary safetensors files (no pickle); `join` refuses a set with a piece missing. The files
that belong to the weights travel with them: the config, the card and its results, the face prior the
heatmap verdicts are judged against and the audit that calibrated them. A file of that kind that the pieces
do not carry is removed from the folder joined into, with a note: it belonged to the weights being replaced.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from emotion.model import FACE_PRIOR_FILE, WEIGHTS_FILE

INDEX = "shards.json"
SIDE_FILES = ("config.json", "README.md", "results.json", FACE_PRIOR_FILE, "audit.json")


def split(folder: str | Path, out: str | Path, max_mb: float = 15.0) -> list[Path]:
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(folder / WEIGHTS_FILE)
    pieces, current, size = [], {}, 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > max_mb * 2**20:
            pieces.append(current)
            current, size = {}, 0
        current[name] = t
        size += nbytes
    pieces.append(current)
    paths = []
    for i, piece in enumerate(pieces, 1):
        paths.append(out / f"model-{i:05d}.safetensors")
        save_file(piece, paths[-1], metadata={"format": "pt"})
    (out / INDEX).write_text(json.dumps({"pieces": [p.name for p in paths], "tensors": len(tensors)}, indent=2))
    for name in SIDE_FILES:
        if (folder / name).is_file():
            shutil.copy(folder / name, out / name)
    return paths


def join(pieces_dir: str | Path, out: str | Path) -> Path:
    pieces_dir, out = Path(pieces_dir), Path(out)
    index = json.loads((pieces_dir / INDEX).read_text())
    tensors = {}
    for name in index["pieces"]:
        tensors.update(load_file(pieces_dir / name))  # raises if a piece is missing
    if len(tensors) != index["tensors"]:
        raise ValueError(f"expected {index['tensors']} tensors, found {len(tensors)}")
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / WEIGHTS_FILE, metadata={"format": "pt"})
    for name in SIDE_FILES:
        if (pieces_dir / name).is_file():
            shutil.copy(pieces_dir / name, out / name)
        elif (out / name).is_file():  # another model's: it must not stay beside these weights
            (out / name).unlink()
            print(f"{out / name}: removed (it belonged to the weights replaced; the pieces carry none)")
    return out / WEIGHTS_FILE


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.shards", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["split", "join"])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--max-mb", type=float, default=15.0)
    args = p.parse_args(argv)
    if args.action == "split":
        print("\n".join(str(x) for x in split(args.src, args.dst, args.max_mb)))
    else:
        print(join(args.src, args.dst))


if __name__ == "__main__":
    main()
