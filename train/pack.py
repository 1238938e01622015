"""Pack what the GPU release run reads (train/release_gpu.sh) into one folder that can be sent to that machine:
FER2013's training and PublicTest pictures in `fer2013-trainval.zip`, and the FER+ vote table's rows for them.

    python -m train.pack --data ../shared/datasets/fer2013 \\
        --labels ../shared/datasets/ferplus/ferplus_labels.csv --out .data

PrivateTest stays behind: the run never reads it, and it is kept for reporting the finished model. The
pictures are stored as they are (PNG and JPEG do not shrink when compressed again), under `fer2013/` in the
zip with the table's own paths, so the run finds `fer2013/train` and reads the table unchanged. Prints what
it wrote and how large it is; the run needs nothing else but the code (not `weights/`).
"""
from __future__ import annotations

import argparse
import csv
import zipfile
from pathlib import Path

USAGES = ("Training", "PublicTest")  # what the release run trains and chooses its epoch on
ZIP_NAME, TABLE_NAME, ROOT_NAME = "fer2013-trainval.zip", "ferplus_labels.csv", "fer2013"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.pack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="FER2013 in the folder layout (train/, test/)")
    p.add_argument("--labels", required=True, help="FER+'s per-file vote table (file, usage, votes...)")
    p.add_argument("--out", default=".data", help="folder to write the zip and the table into")
    return p.parse_args(argv)


def pack(data: str | Path, labels: str | Path, out: str | Path) -> dict:
    """Write `out`/fer2013-trainval.zip and `out`/ferplus_labels.csv (the rows of USAGES only); returns
    {"pictures": {usage: count}, "zip_bytes", "table_bytes"}. Raises SystemExit naming a missing picture."""
    data, out = Path(data), Path(out)
    with Path(labels).open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        rows = [r for r in reader if r.get("usage", "").strip() in USAGES]
    if "file" not in fields or "usage" not in fields:
        raise SystemExit(f"{labels} is not FER+'s per-file table: it needs the columns file and usage.")
    missing = [r["file"] for r in rows if not (data / r["file"]).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} pictures the table names are not under {data}, e.g. {missing[0]}.")
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out / ZIP_NAME, "w", zipfile.ZIP_STORED) as z:
        for r in rows:
            z.write(data / r["file"], f"{ROOT_NAME}/{Path(r['file']).as_posix()}")
    with (out / TABLE_NAME).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    counts = {u: sum(r["usage"].strip() == u for r in rows) for u in USAGES}
    return {"pictures": counts, "zip_bytes": (out / ZIP_NAME).stat().st_size,
            "table_bytes": (out / TABLE_NAME).stat().st_size}


def main(argv=None) -> dict:
    args = parse_args(argv)
    done = pack(args.data, args.labels, args.out)
    mib = (done["zip_bytes"] + done["table_bytes"]) / 2 ** 20
    print(f"{args.out}/{ZIP_NAME}: " + ", ".join(f"{n} {u}" for u, n in done["pictures"].items())
          + f" pictures; with {TABLE_NAME}, {mib:.1f} MiB in all")
    return done


if __name__ == "__main__":
    main()
