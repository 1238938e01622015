"""Fuzzed pictures: real photos encoded in every format Pillow writes, then damaged on purpose.

    python -m tools.fuzz OUT_DIR [--n 2000] [--seed 0]   # writes the files and a list of what each one is

`encodings()` turns the example photos into JPEG (plain, progressive, EXIF-rotated), PNG (RGB, grey, 16-bit,
palette, RGBA), WebP, GIF, TIFF, BMP and ICO files, and animated GIF, WebP, PNG (APNG) and multi-page TIFF.
`mutate()` damages one: bit flips, a truncation, shuffled or repeated chunks, zeroed runs, or an absurd
declared size (width or height rewritten in the header, the PNG checksum mended so the size is what a
decoder meets first). One mutator serves both `tools.hostile` (a seeded `random.Random`) and the
property-based test in tests/test_fuzz.py (Hypothesis's `randoms()`).
"""
from __future__ import annotations

import argparse
import io
import json
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = tuple(ROOT / "examples" / n for n in ("astronaut.jpg", "grace_hopper.jpg", "two_faces.jpg",
                                                 "cat_no_face.jpg"))
SIDE = 256  # the photos are brought down to this, so that thousands of files decode quickly
MUTATIONS = ("intact", "bitflip", "header_bitflip", "truncate", "shuffle", "repeat", "zero", "size")


def _save(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def _frames(img: Image.Image, n: int = 4) -> list[Image.Image]:
    """`img` shifted a little each frame, so an animation's frames differ."""
    return [img.rotate(0, translate=(3 * i, 0)) for i in range(n)]


def encodings(photo: Path, side: int = SIDE) -> dict[str, bytes]:
    """One photo in every format and variant this module damages: name -> file bytes."""
    img = Image.open(photo).convert("RGB")
    img.thumbnail((side, side))
    grey, frames = img.convert("L"), _frames(img)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": the decoder must turn it upright
    sixteen = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    return {
        "jpeg": _save(img, "JPEG", quality=90),
        "jpeg_progressive": _save(img, "JPEG", quality=80, progressive=True),
        "jpeg_exif_rotated": _save(img, "JPEG", quality=85, exif=exif.tobytes()),
        "png": _save(img, "PNG"),
        "png_grey": _save(grey, "PNG"),
        "png_16bit": _save(sixteen, "PNG"),
        "png_palette": _save(img.quantize(64), "PNG"),
        "png_rgba": _save(img.convert("RGBA"), "PNG"),
        "webp": _save(img, "WEBP", quality=80),
        "webp_lossless": _save(img, "WEBP", lossless=True),
        "gif": _save(img, "GIF"),
        "tiff": _save(img, "TIFF"),
        "tiff_lzw": _save(img, "TIFF", compression="tiff_lzw"),
        "bmp": _save(img, "BMP"),
        "ico": _save(img, "ICO", sizes=[(min(*img.size, 128),) * 2]),
        "gif_animated": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0),
        "webp_animated": _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=80),
        "png_animated": _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=80),
        "tiff_pages": _save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
    }


# ------------------------------------------------------------------------------------------------ mutations
ABSURD = {2: (0, 1, 20000, 65535), 3: (0, 0xFFFFFF), 4: (0, 1, 100_000, 0x7FFFFFFF, 0xFFFFFFFF)}
HEAD = 4096  # declared sizes are looked for in the first bytes of the file


def size_fields(data: bytes, width: int, height: int) -> list[tuple[int, str]]:
    """Where the header declares the picture's width or height: (offset, struct format) of each field.

    Found by value: the pair (width, height) or (height, width) side by side as 16- or 32-bit integers of
    either byte order (PNG, GIF, BMP, JPEG's SOF, WebP's VP8, an ICO's inner PNG), as 24-bit (width-1,
    height-1) (WebP's VP8X), or as TIFF's ImageWidth / ImageLength entries.
    """
    head, found = data[:HEAD], []
    for fmt in (">H", "<H", ">I", "<I"):
        n = struct.calcsize(fmt)
        for a, b in ((width, height), (height, width)):
            if max(a, b) >= 2 ** (8 * n):
                continue
            pair = struct.pack(fmt, a) + struct.pack(fmt, b)
            start = 0
            while (i := head.find(pair, start)) >= 0:
                found += [(i, fmt), (i + n, fmt)]
                start = i + 1
    pair = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    if (i := head.find(pair)) >= 0:
        found += [(i, "<3"), (i + 3, "<3")]
    for order in ("<", ">"):  # TIFF: tag 256/257, type SHORT (3) or LONG (4), count 1, then the value
        for tag, value in ((256, width), (257, height)):
            for kind, fmt in ((3, "H"), (4, "I")):
                entry = struct.pack(order + "HHI", tag, kind, 1) + struct.pack(order + fmt, value)
                if (i := head.find(entry)) >= 0:
                    found.append((i + 8, order + fmt))
    return sorted(set(found))


def _fix_png_crcs(data: bytearray) -> None:
    """Recompute every PNG chunk's CRC, so a rewritten IHDR is read rather than refused as corrupt."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return
    i = 8
    while i + 12 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        end = i + 8 + n
        if end + 4 > len(data):
            return
        data[end:end + 4] = (zlib.crc32(bytes(data[i + 4:end])) & 0xFFFFFFFF).to_bytes(4, "big")
        i = end + 4


def _write_field(data: bytearray, offset: int, fmt: str, value: int) -> None:
    if fmt == "<3":
        data[offset:offset + 3] = min(value, 0xFFFFFF).to_bytes(3, "little")
    else:
        n = struct.calcsize(fmt)
        data[offset:offset + n] = struct.pack(fmt, min(value, 2 ** (8 * n) - 1))


def mutate(data: bytes, kind: str, rng: random.Random, size: tuple[int, int] | None = None) -> bytes:
    """`data` damaged in the way `kind` (one of MUTATIONS) names, with choices drawn from `rng`.

    `size` (width, height) is what the intact file declares; "size" needs it to find the fields.
    """
    out = bytearray(data)
    n = len(out)
    if kind == "intact" or n == 0:
        return bytes(out)
    if kind in ("bitflip", "header_bitflip"):
        span = min(n, 512) if kind == "header_bitflip" else n
        for _ in range(rng.randint(1, 64 if kind == "bitflip" else 8)):
            bit = rng.randrange(span * 8)
            out[bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncate":
        out = out[:rng.randrange(n)]
    elif kind == "shuffle":
        cuts = sorted(rng.sample(range(1, n), min(n - 1, rng.randint(2, 15))))
        chunks = [out[a:b] for a, b in zip([0, *cuts], [*cuts, n])]
        head = chunks.pop(0) if rng.random() < 0.5 else b""  # sometimes the magic number stays in front
        rng.shuffle(chunks)
        out = bytearray(head) + b"".join(chunks)
    elif kind == "repeat":
        a = rng.randrange(n)
        b = min(n, a + rng.randint(1, 4096))
        out[b:b] = out[a:b] * rng.randint(1, 64)
    elif kind == "zero":
        a = rng.randrange(n)
        m = min(n - a, rng.randint(1, 2048))
        out[a:a + m] = bytes(m)
    elif kind == "size":
        fields = size_fields(data, *size) if size else []
        if not fields:  # nothing found: damage the header instead
            return mutate(data, "header_bitflip", rng)
        for offset, fmt in rng.sample(fields, rng.randint(1, min(2, len(fields)))):
            width = 3 if fmt == "<3" else struct.calcsize(fmt)
            _write_field(out, offset, fmt, rng.choice(ABSURD[width]))
        _fix_png_crcs(out)
    else:
        raise ValueError(f"unknown mutation {kind!r}; known: {', '.join(MUTATIONS)}")
    return bytes(out)


def declared_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def fuzzed(n: int, seed: int = 0, photos=PHOTOS) -> list[tuple[str, bytes]]:
    """`n` damaged files, the same ones for the same seed: (name, bytes), the name saying photo, format,
    mutation and index. Every format and mutation is used about equally often."""
    rng = random.Random(seed)
    bases = [(p.stem, fmt, data, declared_size(data)) for p in photos for fmt, data in encodings(p).items()]
    out = []
    for i in range(n):
        stem, fmt, data, size = bases[i % len(bases)]
        kind = MUTATIONS[(i // len(bases) + i) % len(MUTATIONS)]
        out.append((f"{i:05d}_{stem}_{fmt}_{kind}", mutate(data, kind, rng, size)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    files = fuzzed(args.n, args.seed)
    for name, data in files:
        (args.out / name).write_bytes(data)
    (args.out / "index.json").write_text(json.dumps({name: len(data) for name, data in files}, indent=1))
    print(f"{len(files)} files in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
