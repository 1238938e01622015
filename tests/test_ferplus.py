"""FER+ labels: both layouts a user may have, which faces are kept, the soft targets, and a real run.

The fixture gives every picture FER+ votes whose top class is the *next* class after the folder's
(class index + 1, mod 7), so a test can tell FER+ labels from FER2013's own; a few pictures get votes that
FER+ would not label with one of our classes (not a face, contempt) or a tie.
"""
import csv
import json
import zipfile
from pathlib import Path

import pytest
import torch

from emotion.model import CLASSES
from tests import fixtures as fx
from train import data as D
from train import evaluate, pack, train

VOTE_COLUMNS = CLASSES + D.FERPLUS_EXTRA
# fer2013new.csv's column order, in our names
VOTE_COLUMNS_CSV_ORDER = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt", "unknown",
                          "not_face")
SPLITS = (("train", "Training", 3), ("public_test", "PublicTest", 2), ("private_test", "PrivateTest", 2))


def design(c: int, i: int) -> tuple[str, dict[str, int]]:
    """The votes written for picture i of folder class c: its kind and the ten counts."""
    votes = dict.fromkeys(VOTE_COLUMNS, 0)
    nxt = CLASSES[(c + 1) % len(CLASSES)]
    if i == 1 and c == 0:
        votes["not_face"] = 10
        return "not_face", votes
    if i == 1 and c == 1:
        votes[nxt], votes[CLASSES[c]] = 5, 5
        return "tie", votes
    if i == 1 and c == 2:
        votes["contempt"], votes[nxt] = 6, 4
        return "contempt", votes
    votes[nxt], votes[CLASSES[c]], votes[CLASSES[(c + 2) % len(CLASSES)]] = 6, 3, 1
    return "clear", votes


def expected(split: str) -> list[tuple[int, str]]:
    """(folder class, kind) of every picture FER+ keeps in `split`, by the design above."""
    n = dict((s, k) for s, _, k in SPLITS)[split]
    keep = {"clear", "tie"} if split == "train" else {"clear"}
    return [(c, design(c, i)[0]) for c in range(len(CLASSES)) for i in range(n) if design(c, i)[0] in keep]


def make_folder_table(root):
    """FER2013 folder layout plus a per-file vote table like ../shared/datasets/ferplus/ferplus_labels.csv."""
    fx.make_fer2013_folders(root)
    table = root / "ferplus_labels.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "row", "usage", "fer2013_label", *VOTE_COLUMNS])
        row = 0
        for c, name in enumerate(CLASSES):
            for _, usage, n in SPLITS:
                folder = "train" if usage == "Training" else "test"
                for i in range(n):
                    votes = design(c, i)[1]
                    w.writerow([f"{folder}/{name}/{usage}_{c * 100 + i}.jpg", row, usage, name,
                                *(votes[k] for k in VOTE_COLUMNS)])
                    row += 1
    return root, table


def make_csv_pair(root):
    """The published pair: fer2013.csv and FER+'s fer2013new.csv, row for row."""
    fx.make_fer2013_csv(root)  # rows: for each class, Training x3, PublicTest x2, PrivateTest x2
    names = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"]
    with (root / "fer2013new.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", *names])
        row = 0
        for c in range(len(CLASSES)):
            for _, usage, n in SPLITS:
                for i in range(n):
                    votes = design(c, i)[1]
                    w.writerow([usage, f"fer{row:07d}.png", *(votes[k] for k in VOTE_COLUMNS_CSV_ORDER)])
                    row += 1
    return root, None


LAYOUTS = {"folders_and_table": make_folder_table, "fer2013new_csv": make_csv_pair}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("split", [s for s, _, _ in SPLITS])
def test_ferplus_labels_come_from_the_votes(tmp_path, layout, split):
    root, table = LAYOUTS[layout](tmp_path / layout)
    s = D.load_split("ferplus", root, split, size=32, labels=table)
    want = expected(split)
    assert len(s) == len(want)
    # the picture's grey level says its folder class; FER+ moved every clear face to the next class
    folder_class = ((s.images.float().mean((1, 2, 3)) - 20) / 30).round().long().tolist()
    got = sorted((fc, label, tuple(round(float(v), 4) for v in t))
                 for fc, label, t in zip(folder_class, s.labels.tolist(), s.targets))
    assert got == sorted(answer(c, kind) for c, kind in want)


def answer(c: int, kind: str) -> tuple[int, int, tuple[float, ...]]:
    """(folder class, label, soft target) the design above must give."""
    nxt = (c + 1) % len(CLASSES)
    target = [0.0] * len(CLASSES)
    if kind == "tie":  # 5 votes each: an even split, labelled with the first of the two in CLASSES order
        target[c] = target[nxt] = 0.5
        return c, min(c, nxt), tuple(target)
    # 6 votes for the next class, 3 for the folder's, 1 for another: the single vote is dropped as noise
    target[nxt], target[c] = round(6 / 9, 4), round(3 / 9, 4)
    return c, nxt, tuple(target)


def test_csv_pair_must_be_row_aligned(tmp_path):
    root, _ = make_csv_pair(tmp_path / "pair")
    lines = (root / "fer2013new.csv").read_text().splitlines()
    lines[1] = lines[1].replace("Training", "PublicTest", 1)  # row 0 is Training in fer2013.csv
    (root / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(D.DatasetError, match="row-aligned"):
        D.list_split("ferplus", root, "public_test")


def test_missing_ferplus_labels_say_what_to_provide(tmp_path):
    root = fx.make_fer2013_folders(tmp_path / "fer")
    with pytest.raises(D.DatasetError, match="fer2013new.csv"):
        D.list_split("ferplus", root, "train")
    with pytest.raises(D.DatasetError, match="not found"):
        D.list_split("ferplus", root, "train", labels=root / "nope.csv")


def test_soft_cross_entropy_matches_torch_on_hard_labels():
    """On hard labels the loss is F.cross_entropy's, with and without class weights and label smoothing; the
    FER2013 recipe's default (sqrt class weights and smoothing 0.1) included, where a loss that divided by the
    smoothed targets' weight gives 2.3467 on these logits, torch 2.3589."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 7, generator=g)
    y = torch.randint(0, 7, (16,), generator=g)
    w = torch.rand(7, generator=g) + 0.5
    onehot = torch.nn.functional.one_hot(y, 7).float()
    for weight in (w, torch.ones(7), train.class_weights([40, 5, 30, 90, 60, 50, 25], "sqrt")):
        for smoothing in (0.0, 0.1):
            ref = torch.nn.functional.cross_entropy(logits, y, weight=weight, label_smoothing=smoothing)
            got = train.soft_cross_entropy(logits, onehot, weight, smoothing)
            assert got.item() == pytest.approx(ref.item(), rel=1e-5), (weight, smoothing)
    ref = torch.nn.functional.cross_entropy(logits, y, weight=w, label_smoothing=0.1)
    assert ref.item() == pytest.approx(2.3589, abs=1e-4)  # the case the review found


@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_and_evaluate_on_ferplus(tmp_path, layout):
    root, table = LAYOUTS[layout](tmp_path / layout)
    labels = [] if table is None else ["--labels", str(table)]
    run = tmp_path / "run"
    best = train.main(["--dataset", "ferplus", "--data", str(root), *labels, "--run-dir", str(run), "--epochs", "1",
                       "--batch-size", "8", "--size", "32", "--threads", "1", "--no-progress"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1] and best["n"] == len(expected("public_test"))
    cfg = json.loads((run / "best" / "results.json").read_text())["training"]
    assert cfg["recipe"]["dataset"] == "ferplus" and cfg["train_images"] == len(expected("train"))
    m = evaluate.main(["--weights", str(run / "best"), "--data", str(root), "--dataset", "ferplus", *labels,
                       "--split", "private_test", "--out", str(tmp_path / "eval"), "--no-progress"])
    assert m["n"] == len(expected("private_test")) and m["dataset"] == "ferplus"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_face_keeps_fer2013s_own_label_beside_its_votes(tmp_path, layout):
    """The fixture files every picture under its FER2013 class (folder, table column or csv `emotion`) while
    FER+ votes it the next class: the split must carry the folder's class as the face's own label."""
    root, table = LAYOUTS[layout](tmp_path / layout)
    for split, _, _ in SPLITS:
        s = D.load_split("ferplus", root, split, size=32, labels=table)
        folder_class = ((s.images.float().mean((1, 2, 3)) - 20) / 30).round().long()
        assert s.originals.tolist() == folder_class.tolist()
        assert sorted(s.originals.tolist()) == sorted(c for c, _ in expected(split))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fer2013_blend_moves_that_share_of_each_target_to_the_faces_own_label(tmp_path, layout):
    """With --fer2013-blend 0.25 a clear face of folder class c (FER+: 6 votes for the next class, 3 for c,
    a single dropped) trains on 0.75 x (2/3, 1/3) + 0.25 on c, and the tied face (5 and 5) on 0.75 x (1/2, 1/2)
    + 0.25 on c; the class prior the model keeps is their mean, so it says the targets the loss saw."""
    root, table = LAYOUTS[layout](tmp_path / layout)
    labels = [] if table is None else ["--labels", str(table)]
    run = tmp_path / "run"
    train.main(["--dataset", "ferplus", "--data", str(root), *labels, "--run-dir", str(run), "--epochs", "1",
                "--batch-size", "8", "--size", "32", "--threads", "1", "--no-progress", "--fer2013-blend", "0.25"])
    want = torch.zeros(len(CLASSES), dtype=torch.float64)
    kept = expected("train")
    for c, kind in kept:
        nxt = (c + 1) % len(CLASSES)
        own, other = (0.5, 0.5) if kind == "tie" else (1 / 3, 2 / 3)
        want[c] += 0.75 * own + 0.25
        want[nxt] += 0.75 * other
    want /= len(kept)
    cfg = json.loads((run / "best" / "config.json").read_text())
    got = [cfg["decision"]["prior"][name] for name in CLASSES]
    assert got == pytest.approx(want.tolist(), abs=1e-6)
    recipe = json.loads((run / "best" / "results.json").read_text())["training"]["recipe"]
    assert recipe["fer2013_blend"] == 0.25
    with pytest.raises(SystemExit, match="needs --dataset ferplus"):
        train.main(["--dataset", "fer2013", "--data", str(root), "--run-dir", str(tmp_path / "no"), "--epochs", "1",
                    "--size", "32", "--threads", "1", "--no-progress", "--fer2013-blend", "0.25"])


def test_fer2013_blend_only_blends_the_faces_filed_under_those_classes(tmp_path):
    """--fer2013-blend 0.5 --fer2013-blend-only angry sad: only faces the folders file as angry or sad get half
    their target on that class; every other face keeps its FER+ votes, so the prior the model keeps is the mean
    of those targets. A refused option leaves no run folder behind."""
    root, table = LAYOUTS["folders_and_table"](tmp_path / "folders")
    run = tmp_path / "run"
    train.main(["--dataset", "ferplus", "--data", str(root), "--labels", str(table), "--run-dir", str(run),
                "--epochs", "1", "--batch-size", "8", "--size", "32", "--threads", "1", "--no-progress",
                "--fer2013-blend", "0.5",
                "--fer2013-blend-only", "angry", "sad"])
    chosen = {CLASSES.index("angry"), CLASSES.index("sad")}
    want = torch.zeros(len(CLASSES), dtype=torch.float64)
    kept = expected("train")
    assert {c for c, _ in kept} & chosen and {c for c, _ in kept} - chosen  # the fixture has both kinds
    for c, kind in kept:
        nxt = (c + 1) % len(CLASSES)
        own, other = (0.5, 0.5) if kind == "tie" else (1 / 3, 2 / 3)
        share = 0.5 if c in chosen else 0.0
        want[c] += (1 - share) * own + share
        want[nxt] += (1 - share) * other
    want /= len(kept)
    cfg = json.loads((run / "best" / "config.json").read_text())
    assert [cfg["decision"]["prior"][name] for name in CLASSES] == pytest.approx(want.tolist(), abs=1e-6)
    recipe = json.loads((run / "best" / "results.json").read_text())["training"]["recipe"]
    assert recipe["fer2013_blend_only"] == ["angry", "sad"]
    refused = tmp_path / "refused"
    with pytest.raises(SystemExit, match="give --fer2013-blend too"):
        train.main(["--dataset", "ferplus", "--data", str(root), "--labels", str(table), "--run-dir", str(refused),
                    "--epochs", "1", "--size", "32", "--threads", "1", "--no-progress", "--fer2013-blend-only", "angry"])
    assert not refused.exists()


def test_the_gpu_run_is_packed_its_training_and_publictest_faces_only(tmp_path):
    """train.pack puts the training and PublicTest pictures and their table rows in .data/ for
    train/release_gpu.sh; unpacked as that script does, FER+ lists the same faces with the labels the fixture
    was built with, and PrivateTest (pictures and votes) stays behind. A picture the table names but the folder
    lacks stops it with a message."""
    root, table = make_folder_table(tmp_path / "fer")
    out = tmp_path / ".data"
    done = pack.main(["--data", str(root), "--labels", str(table), "--out", str(out)])
    assert done["pictures"] == {"Training": 3 * len(CLASSES), "PublicTest": 2 * len(CLASSES)}
    with zipfile.ZipFile(out / "fer2013-trainval.zip") as z:
        names = sorted(z.namelist())
        z.extractall(tmp_path / "unpacked")
    assert names == sorted(f"fer2013/{'train' if usage == 'Training' else 'test'}/{name}/{usage}_{c * 100 + i}.jpg"
                           for c, name in enumerate(CLASSES) for _, usage, n in SPLITS[:2] for i in range(n))
    with (out / "ferplus_labels.csv").open(newline="") as f:
        assert {r["usage"] for r in csv.DictReader(f)} == {"Training", "PublicTest"}
    unpacked = tmp_path / "unpacked" / "fer2013"
    public = D.list_split("ferplus", unpacked, "public_test", out / "ferplus_labels.csv")
    assert [label for _, label in public] == [(c + 1) % len(CLASSES) for c, _ in expected("public_test")]
    assert all(Path(source).is_file() for source, _ in public)
    assert len(D.list_split("ferplus", unpacked, "train", out / "ferplus_labels.csv")) == len(expected("train"))
    (root / "test" / "angry" / "PublicTest_0.jpg").unlink()
    with pytest.raises(SystemExit, match="1 pictures the table names are not under"):
        pack.main(["--data", str(root), "--labels", str(table), "--out", str(tmp_path / "again")])
