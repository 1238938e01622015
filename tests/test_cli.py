"""`python -m emotion PATH... --out DIR` run as a user runs it, on a folder with good and broken files."""
import csv
import json
import subprocess
import sys

from emotion.model import CLASSES
from tests import clips
from tests import fixtures as fx


def run(*args):
    return subprocess.run([sys.executable, "-m", "emotion", *map(str, args)], cwd=fx.ROOT, capture_output=True,
                          text=True, timeout=900)


def test_a_folder_with_a_broken_file_among_good_ones(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "more").mkdir(parents=True)
    for name in ("two_faces.jpg", "cat_no_face.jpg"):
        (src / name).write_bytes((fx.ROOT / "examples" / name).read_bytes())
    (src / "more" / "astronaut.jpg").write_bytes(fx.PORTRAIT.read_bytes())
    (src / "broken.jpg").write_bytes(fx.PORTRAIT.read_bytes()[:3000])
    (src / "notes.txt").write_text("not a picture\n")
    clips.one_person(src / "clip.mp4", seconds=2, fps=2)

    p = run(src, "--out", out, "--heatmaps", "--fps", 1, "--check-every", 5)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    by_file = {}
    for r in rows:
        by_file.setdefault(r["file"].removeprefix(str(src) + "/"), []).append(r)
    assert sorted(by_file) == ["clip.mp4", "more/astronaut.jpg", "two_faces.jpg"]  # the cat has no face
    assert [r["face"] for r in by_file["two_faces.jpg"]] == ["1", "2"]
    assert [(r["kind"], r["label"]) for r in by_file["more/astronaut.jpg"]] == [("photo", "happy")]
    # the clip's person is checked on their first frame, then not for 5 s: the frame at 1 s has no verdict
    assert [(r["kind"], r["time"], r["face"], r["label"], r["checked"]) for r in by_file["clip.mp4"]] == \
        [("video", "0.0", "1", "happy", "True"), ("video", "1.0", "1", "happy", "False")]
    for r in rows:
        assert sum(float(r[c]) for c in CLASSES) > 0.99
        assert bool(r["verdict_level"] and r["verdict"]) == (r["checked"] == "True") == (r["time"] != "1.0")
        assert int(r["x1"]) > int(r["x0"]) and int(r["y1"]) > int(r["y0"])
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(j["file"], j["face"], j["label"], str(j["checked"])) for j in lines] == \
        [(r["file"], int(r["face"]), r["label"], r["checked"]) for r in rows]
    # the broken file is listed, the text file left out by its name, and the others' outputs are there
    errors = list(csv.DictReader((out / "errors.csv").open()))
    assert [e["file"] for e in errors] == [str(src / "broken.jpg")] and "truncated or corrupt" in errors[0]["error"]
    assert "broken.jpg is truncated or corrupt" in p.stderr and "notes.txt" in p.stderr
    assert "file/s" in p.stderr or "s/file" in p.stderr  # the progress bar, on stderr
    assert p.stdout == ""
    assert sorted(f.name for f in (out / "heatmaps").iterdir()) == \
        ["astronaut_face1.png", "two_faces_face1.png", "two_faces_face2.png"]
    assert (out / "clip_annotated.mp4").stat().st_size > 1000 and (out / "clip_timeline.png").stat().st_size > 1000


def test_nothing_readable_exits_non_zero(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video\n" * 40)
    p = run(broken, tmp_path / "missing.jpg", "--out", tmp_path / "out", "--no-progress")
    assert p.returncode == 1
    assert "2 file(s) could not be read" in p.stderr and "missing.jpg: not found" in p.stderr
    assert "broken.mp4 is not a video we can read" in p.stderr


def test_a_model_that_cannot_be_loaded_is_said_in_a_sentence(tmp_path):
    out = run(fx.PORTRAIT, "--out", tmp_path / "out", "--model", tmp_path / "no-such-model")
    assert out.returncode == 2
    assert out.stderr.startswith("Could not load the model: ") and "no-such-model" in out.stderr
    assert "Traceback" not in out.stderr
