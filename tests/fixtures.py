"""Generated test data: tiny data sets in every supported layout, and awkward variants of a real photo.

Class identity is written into the pixels (grey level 20 + 30 * class index), so a test can check that
each layout's labels arrive as the right class names.
"""
from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from emotion.model import CLASSES
from train.data import FER_CSV_LABELS, RAFDB_LABELS

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = ROOT / "examples" / "astronaut.jpg"
SECOND_PORTRAIT = ROOT / "examples" / "grace_hopper.jpg"
NO_FACE = ROOT / "examples" / "cat_no_face.jpg"
RAF_NUMBER = {name: number for number, name in RAFDB_LABELS.items()}


def grey_level(class_index: int) -> int:
    return 20 + 30 * class_index


def class_image(class_index: int, size: int = 48, seed: int = 0, colour: bool = False) -> Image.Image:
    """A flat image of the class's grey level with a little noise and a face-like blob."""
    rng = np.random.default_rng(seed)
    a = np.full((size, size), grey_level(class_index), np.float32) + rng.normal(0, 3, (size, size))
    yy, xx = np.mgrid[:size, :size]
    a[(yy - size * 0.7) ** 2 + ((xx - size / 2) * 0.5) ** 2 < (size * 0.1) ** 2] += 15  # a "mouth"
    a = np.clip(a, 0, 255).astype(np.uint8)
    img = Image.fromarray(a)
    return img.convert("RGB") if colour else img


def make_fer2013_folders(root: Path, per_class: int = 3) -> Path:
    for c, name in enumerate(CLASSES):
        for split, prefix, n in (("train", "Training", per_class), ("test", "PublicTest", 2), ("test", "PrivateTest", 2)):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                class_image(c, seed=i).save(d / f"{prefix}_{c * 100 + i}.jpg", quality=95)
    return root


def make_fer2013_csv(root: Path, per_class: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "fer2013.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for name in CLASSES:
            c = CLASSES.index(name)
            for usage, n in (("Training", per_class), ("PublicTest", 2), ("PrivateTest", 2)):
                for i in range(n):
                    pixels = np.asarray(class_image(c, seed=i)).flatten()
                    w.writerow([FER_CSV_LABELS.index(name), " ".join(map(str, pixels)), usage])
    return root


def make_rafdb_basic(root: Path, per_class: int = 3, test_per_class: int = 2, attributes=None) -> Path:
    """Official layout: basic/EmoLabel/list_patition_label.txt and basic/Image/aligned/*_aligned.jpg.

    `attributes(split, k)` -> (gender, race, age) codes for the k-th picture of a split (in the label file's
    order) also writes RAF-DB's manual annotations, basic/Annotation/manual/<image>_manu_attri.txt."""
    basic = root / "basic"
    (basic / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (basic / "Image" / "aligned").mkdir(parents=True, exist_ok=True)
    if attributes:
        (basic / "Annotation" / "manual").mkdir(parents=True, exist_ok=True)
    lines, k = [], 0
    for split, n in (("train", per_class), ("test", test_per_class)):
        j = 0
        for c, name in enumerate(CLASSES):
            for i in range(n):
                k += 1
                stem = f"{split}_{k:05d}"
                class_image(c, size=100, seed=i, colour=True).save(basic / "Image" / "aligned" / f"{stem}_aligned.jpg",
                                                                 quality=95)
                lines.append(f"{stem}.jpg {RAF_NUMBER[name]}")
                if attributes:
                    marks = "\n".join(f"{x:.2f}\t{y:.2f}" for x, y in ((35, 40), (65, 40), (50, 58), (38, 75), (62, 75)))
                    codes = "\n".join(str(v) for v in attributes(split, j))
                    (basic / "Annotation" / "manual" / f"{stem}_manu_attri.txt").write_text(f"{marks}\n{codes}\n")
                j += 1
    (basic / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


RAFDB_TEST_PER_CLASS = 4  # 28 test pictures in the RAF-DB fixture whose groups are known


def rafdb_codes(split: str, j: int) -> tuple[int, int, int]:
    """The (gender, race, age) codes of the j-th picture of a split in `make_rafdb_groups`: male for even j and
    female for odd j, except the last test picture (unsure, a group too small to compare); race j % 3; age
    20-39 for the first half and 40-69 for the second, except the first picture (70+, alone)."""
    last = len(CLASSES) * RAFDB_TEST_PER_CLASS - 1
    gender = 2 if (split, j) == ("test", last) else j % 2
    age = 4 if j == 0 else (2 if j <= last // 2 else 3)
    return gender, j % 3, age


def rafdb_answers(split: str = "test") -> tuple[list[int], list[int]]:
    """The true classes of the fixture's test pictures (in the label file's order) and the answers its model is
    built to give: the true class, except every second female face (j % 4 == 1), put in the next class."""
    n = len(CLASSES) * RAFDB_TEST_PER_CLASS
    true = [j // RAFDB_TEST_PER_CLASS for j in range(n)]
    answers = [(c + 1) % len(CLASSES) if rafdb_codes(split, j)[0] == 1 and j % 4 == 1 else c
               for j, c in enumerate(true)]
    return true, answers


def make_rafdb_groups(root: Path) -> Path:
    """The official layout with RAF-DB's manual annotations (rafdb_codes) for every picture."""
    return make_rafdb_basic(root, per_class=1, test_per_class=RAFDB_TEST_PER_CLASS, attributes=rafdb_codes)


def make_rafdb_kaggle(root: Path, per_class: int = 3) -> Path:
    """Kaggle layout: DATASET/{train,test}/1..7/*.jpg with {train,test}_labels.csv beside DATASET."""
    for split, n in (("train", per_class), ("test", 2)):
        rows = []
        for c, name in enumerate(CLASSES):
            number = RAF_NUMBER[name]
            d = root / "DATASET" / split / str(number)
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                fname = f"{split}_{c}_{i}_aligned.jpg"
                class_image(c, size=100, seed=i, colour=True).save(d / fname, quality=95)
                rows.append((fname, number))
        with (root / f"{split}_labels.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "label"])
            w.writerows(rows)
    return root


def make_class_folders(root: Path, per_class: int = 4, names=None) -> Path:
    """Generic `<class>/<image>` layout, with other spellings of class names where given."""
    for c, name in enumerate(names or CLASSES):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            class_image(c, size=64, seed=i, colour=True).save(d / f"img_{i}.png")
    return root


def solved_model(pictures: list, answers: list[int], folder: Path, size: int = 32):
    """A random ResNet50 at `size` px whose classifier is solved (least squares on its features) to give each
    picture (path or array) the class in `answers`, saved as a model folder the app loads."""
    import torch

    from emotion.images import load_image
    from emotion.model import Preprocess, create_net
    from train.export import save_model

    torch.manual_seed(0)
    net = create_net().eval()
    prep = Preprocess(size=size)
    x = prep.to_input([load_image(p).rgb for p in pictures])
    wanted = torch.tensor(answers)
    with torch.no_grad():
        feats = net.forward_head(net.forward_features(x), pre_logits=True).double()
        a = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], 1)
        t = torch.full((len(feats), len(CLASSES)), -1.0, dtype=torch.float64)
        t[torch.arange(len(feats)), wanted] = 3.0
        w = torch.linalg.lstsq(a, t).solution
        net.fc.weight.copy_(w[:-1].T.float())
        net.fc.bias.copy_(w[-1].float())
    return save_model(net, folder, prep, training={})


def constant_teacher(folder: Path, answer: str, size: int = 32, mean: float = 0.4, std: float = 0.3) -> Path:
    """A grey, mirror-averaging model folder whose network answers `answer` for every face (logit 10, the rest
    0), with its classes listed backwards in config.json, so the answer sits in another column than in CLASSES."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    from emotion.model import Preprocess, create_net
    from train.export import save_model

    torch.manual_seed(0)
    save_model(create_net(), folder, Preprocess(size=size, mean=(mean,) * 3, std=(std,) * 3, tta_flip=True),
               training={})
    w = load_file(folder / "model.safetensors")
    backwards = list(CLASSES)[::-1]
    w["fc.weight"], w["fc.bias"] = torch.zeros_like(w["fc.weight"]), torch.zeros_like(w["fc.bias"])
    w["fc.bias"][backwards.index(answer)] = 10.0
    save_file(w, folder / "model.safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["label_names"] = backwards
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


# ---------------------------------------------------------------- awkward pictures
def portrait() -> Image.Image:
    return Image.open(PORTRAIT).convert("RGB")


def ten_faces() -> Image.Image:
    """A 5 x 2 grid of the two shipped portraits' faces (with some shoulders): ten faces."""
    a = portrait().crop((128, 10, 318, 240)).resize((190, 230))
    b = Image.open(SECOND_PORTRAIT).convert("RGB").crop((130, 60, 400, 390)).resize((190, 230))
    grid = Image.new("RGB", (5 * 200, 2 * 240), "white")
    for k in range(10):
        grid.paste(a if k % 2 == 0 else b, ((k % 5) * 200 + 5, (k // 5) * 240 + 5))
    return grid


def loose_face_crops(side: int = 64) -> list[Image.Image]:
    """24 grey face crops like a data set's, `side` pixels, with the face loosely framed: each of the four faces
    in the shipped photos (two portraits, two faces in two_faces.jpg) in squares 1.2, 1.4 and 1.6 times the
    detector's box about its centre, each also mirrored."""
    from emotion.faces import cut, detect_faces
    from emotion.model import face_pixels

    crops = []
    for photo in (PORTRAIT, SECOND_PORTRAIT, ROOT / "examples" / "two_faces.jpg"):
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        for det in detect_faces(rgb)[:2]:
            x0, y0, x1, y1 = det.box
            cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
            for grow in (1.2, 1.4, 1.6):
                h = s * grow / 2
                grey = face_pixels(cut(rgb, tuple(int(round(v)) for v in (cx - h, cy - h, cx + h, cy + h))), side)
                crops += [Image.fromarray(grey), Image.fromarray(np.ascontiguousarray(grey[:, ::-1]))]
    return crops


def tall_portrait() -> Image.Image:
    """The portrait cut to 384 x 512 (width x height): not square, so a width/height swap shows."""
    return portrait().crop((64, 0, 448, 512))


# How a camera stores an upright picture for each EXIF orientation (the viewer undoes it): 6 says "turn me 90
# degrees clockwise", so its pixels are the upright picture turned 90 degrees counter-clockwise.
STORED_FOR_ORIENTATION = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                          6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def exif_oriented(path: Path, orientation: int, upright: Image.Image | None = None) -> Path:
    """`upright` (default: `tall_portrait()`) stored as a camera stores it with EXIF `orientation` 1..8."""
    upright = tall_portrait() if upright is None else upright
    turn = STORED_FOR_ORIENTATION[orientation]
    img = upright if turn is None else upright.transpose(turn)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)
    return path


def exif_rotated(path: Path) -> Path:
    """The tall portrait stored lying on its side, with EXIF orientation 6 saying 'turn me upright'."""
    return exif_oriented(path, 6)


def png_with_declared_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims width x height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def awkward_files(tmp: Path) -> dict[str, Path]:
    """Every bad or odd input the app must survive, written to `tmp`."""
    tmp.mkdir(parents=True, exist_ok=True)
    p = portrait()
    files = {}
    files["empty"] = tmp / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["text_as_jpg"] = tmp / "notes.jpg"
    files["text_as_jpg"].write_text("this is not an image\n" * 20)
    files["one_pixel"] = tmp / "one.png"
    Image.new("RGB", (1, 1), "red").save(files["one_pixel"])
    files["grey"] = tmp / "grey.png"
    p.convert("L").save(files["grey"])
    files["rgba"] = tmp / "rgba.png"
    rgba = p.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(files["rgba"])
    files["cmyk"] = tmp / "cmyk.jpg"
    p.convert("CMYK").save(files["cmyk"], quality=92)
    files["sixteen_bit"] = tmp / "sixteen.png"
    Image.fromarray((np.asarray(p.convert("L")).astype(np.uint16) * 257)).save(files["sixteen_bit"])
    files["exif_rotated"] = exif_rotated(tmp / "rotated.jpg")
    files["no_face"] = NO_FACE
    files["ten_faces"] = tmp / "ten.jpg"
    ten_faces().save(files["ten_faces"], quality=92)
    files["truncated"] = tmp / "truncated.jpg"
    buf = PORTRAIT.read_bytes()
    files["truncated"].write_bytes(buf[: len(buf) // 2])
    files["bomb_header"] = png_with_declared_size(tmp / "bomb.png", 60000, 60000)
    files["gif_animated"] = tmp / "anim.gif"
    frames = [p.resize((256, 256)), Image.new("RGB", (256, 256), "blue")]
    frames[0].save(files["gif_animated"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    return files


def huge_jpeg(path: Path, side: int = 12000) -> Path:
    """A side x side JPEG with the portrait in its middle (written once; ~3 s)."""
    if not path.exists():
        big = Image.new("RGB", (side, side), (200, 200, 200))
        big.paste(portrait().resize((2048, 2048)), (side // 2 - 1024, side // 2 - 1024))
        big.save(path, quality=80)
    return path
