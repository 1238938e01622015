"""Command line: photos, folders and videos in, one row per face out (CSV and JSONL), heatmaps if asked.

    python -m emotion photos/ interview.mp4 --out results/ [--heatmaps] [--fps 2 | --fps 0] [--check-every 1]

Exit status 0 when at least one file could be read (with or without faces), 1 when none could, 2 when the
model cannot be loaded (said in a sentence, not a traceback).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from emotion.clip import CHECK_EVERY_S
from emotion.explain import DEFAULT_LAYER, DEFAULT_METHOD, LAYERS, METHODS
from emotion.video import DEFAULT_RATE, EVERY_FRAME, LIMITS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m emotion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="photos, videos, or folders of them (searched to any depth)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for results.csv, results.jsonl and the rest")
    p.add_argument("--heatmaps", action="store_true", help="also write each photo face's [face | heatmap | "
                   "probabilities] picture and each video's clip with labels and heatmaps drawn on")
    p.add_argument("--fps", type=float, default=DEFAULT_RATE, help=f"video frames analysed a second "
                   f"(default {DEFAULT_RATE:g}; {EVERY_FRAME} = every frame). Limits: {LIMITS}")
    p.add_argument("--check-every", type=float, default=CHECK_EVERY_S, metavar="SECONDS",
                   help="a video person's full check (the heatmap's verdict and the what-if) on their first frame, "
                        f"then at most once every SECONDS (default {CHECK_EVERY_S:g}; 0 = every frame); the other "
                        "frames get the label, probabilities and a Grad-CAM map for the clip")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS), help="explanation method")
    p.add_argument("--layer", default=DEFAULT_LAYER.split()[0], choices=[k.split()[0] for k in LAYERS])
    p.add_argument("--whole-image", action="store_true", help="each photo is one face, already cropped")
    p.add_argument("--model", default=None, help="folder, local-dir:PATH or hf-hub:owner/name (default: "
                                                 "$EMOTION_MODEL, else weights/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = p.parse_args(argv)
    if args.fps < 0:
        p.error("--fps must be 0 (every frame) or more")
    if not args.check_every >= 0:
        p.error("--check-every must be 0 (every frame) or more seconds")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from emotion.batch import run  # after parsing: --help needs no model
    from emotion.engine import EngineError
    from emotion.model import ModelLoadError, load_model

    try:
        model = load_model(args.model)
    except (ModelLoadError, EngineError, ValueError) as e:
        print(f"Could not load the model: {e}", file=sys.stderr)
        return 2
    s = run(args.paths, args.out, model, rate=args.fps, method=args.method, layer=args.layer,
            whole_image=args.whole_image, heatmaps=args.heatmaps, progress=not args.no_progress,
            check_every=args.check_every)
    err = sys.stderr
    print(f"{len(s.read)} file(s) read, {s.rows} face row(s) -> {Path(args.out) / 'results.csv'}, results.jsonl",
          file=err)
    if s.video_seconds:
        print(f"video: {s.video_seconds:.1f} s analysed in {s.video_time:.1f} s "
              f"({s.video_time / s.video_seconds:.2f} s per video second)", file=err)
    if s.skipped:
        print(f"{len(s.skipped)} file(s) in the folders are neither photos nor videos by their names, left out: "
              + ", ".join(str(f) for f in s.skipped[:10]) + (" ..." if len(s.skipped) > 10 else ""), file=err)
    if s.failed:
        print(f"{len(s.failed)} file(s) could not be read (listed in {Path(args.out) / 'errors.csv'}):", file=err)
        for path, message in s.failed:
            print(f"  {path}: {message}", file=err)
    return 0 if s.read else 1


if __name__ == "__main__":
    sys.exit(main())
