"""Video files: real clips written by the tests (tests/clips.py), decoded, tracked, analysed and written back.

Kept small for a 2-core CPU: clips of 1-3 s at 160-320 px and a few frames a second.
"""
import csv

import av
import numpy as np
import pytest

from emotion import table, timeline
from emotion.clip import DETECT_EVERY_S, VideoResult, analyse_video, tracker_for
from emotion.faces import detect_faces
from emotion.pipeline import analyse
from emotion.track import Tracker
from emotion.video import (EVERY_FRAME, MAX_ANALYSED_FRAMES, MAX_DURATION_S, MAX_VIDEO_BYTES, ClipWriter,
                           VideoError, probe, sample_frames)
from tests import clips
from tests import fixtures as fx


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


def test_two_people_keep_their_ids_while_they_cross_and_swap_sizes(folder):
    """The real decoder, detector and tracker on a clip whose answer is known by construction: the face in the
    top half is always one person and the face in the bottom half the other, though the detector's order
    (largest first) flips half-way."""
    path = clips.two_people(folder / "two.mp4", seconds=3, fps=4)
    info = probe(path)
    tracker = tracker_for(info.fps)
    ids_top, ids_bottom, largest_on_top = [], [], []
    for _, rgb in sample_frames(path, info, EVERY_FRAME):
        faces = detect_faces(rgb)
        assert len(faces) == 2
        mid = rgb.shape[0] / 2
        largest_on_top.append((faces[0].box[1] + faces[0].box[3]) / 2 < mid)
        for face, track in zip(faces, tracker.update([f.box for f in faces])):
            (ids_top if (face.box[1] + face.box[3]) / 2 < mid else ids_bottom).append(track.id)
    assert len(ids_top) == len(ids_bottom) == 12
    assert largest_on_top[0] and not largest_on_top[-1]  # the clip does swap the detector's order
    assert set(ids_top) == {1} and set(ids_bottom) == {2}  # the larger face at the start got id 1


def test_tracker_on_boxes_that_cross_and_that_leave():
    """Two boxes passing each other side by side keep their ids; one that is gone longer than max_missed
    frames comes back under a new id."""
    t = Tracker(max_missed=1)
    for x in range(0, 101, 10):  # A moves right, B left, 60 px apart vertically, same size
        a, b = (x, 0, x + 50, 50), (100 - x, 60, 150 - x, 110)
        order = [b, a] if x % 20 else [a, b]  # the detector's order is no guide
        ids = {box: tr.id for box, tr in zip(order, t.update(order))}
        assert (ids[a], ids[b]) == (1, 2)
    assert [tr.id for tr in t.update([(100, 0, 150, 50)])] == [1]  # B missed once: still open
    t.update([(100, 0, 150, 50)])  # B missed twice: closed
    assert [tr.id for tr in t.update([(100, 0, 150, 50), (0, 60, 50, 110)])] == [1, 3]


def test_one_person_clip_is_analysed_and_annotated(model, folder):
    path = clips.one_person(folder / "one.mp4", seconds=2, fps=4)
    steps = []
    r = analyse_video(path, model, 2, clip_path=folder / "one_annotated.mp4",
                      progress=lambda f, d: steps.append(f))
    assert r.frames == 4 and [row["time"] for row in r.rows] == [0.0, 0.5, 1.0, 1.5]
    assert r.people == [1] and r.duration == pytest.approx(2.0)
    assert {row["label"] for row in r.rows} == {"happy"}  # the astronaut smiles
    assert [row["checked"] for row in r.rows] == [True, False, True, False]  # the first frame, then once a second
    assert all(row["level"] in LEVELS for row in r.rows if row["checked"])
    xs = [row["box"][0] for row in r.rows]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 100  # the face slides to the right
    assert steps[-1] == 1.0 and steps == sorted(steps)
    # the annotated clip: H.264, 4 frames at 2 a second, the input's size, with the heatmap drawn on the face
    with av.open(str(r.clip)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and float(s.average_rate) == 2
        drawn = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    plain = [rgb for _, rgb in sample_frames(path, probe(path), 2)]
    assert len(drawn) == 4 and drawn[0].shape == plain[0].shape == (240, 320, 3)
    x0, y0, x1, y1 = r.rows[0]["box"]
    face_change = np.abs(drawn[0][y0:y1, x0:x1].astype(int) - plain[0][y0:y1, x0:x1]).mean()
    corner_change = np.abs(drawn[0][-30:, -30:].astype(int) - plain[0][-30:, -30:]).mean()
    assert face_change > 20 > 3 > corner_change  # heatmap on the face, the background as it was
    # the CSV: one row per face and frame, seven probabilities that sum to 1
    out = table.write_csv(table.video_rows(r), folder / "one.csv", model.labels)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and rows[0]["kind"] == "video" and rows[0]["face"] == "1"
    assert sum(float(rows[0][c]) for c in model.labels) == pytest.approx(1, abs=1e-3)
    assert [row["checked"] for row in rows] == ["True", "False", "True", "False"]
    assert rows[0]["verdict"] and rows[1]["verdict"] == rows[1]["verdict_level"] == rows[1]["what_if"] == ""


LEVELS = ("good", "weak", "chance", "untestable", "empty")


def test_a_person_is_checked_on_their_first_frame_then_once_every_check_every_seconds(model, folder):
    """3 s of one face at 8 frames a second, every frame analysed: the full check (the asked-for heatmap, its
    verdict and the what-if) at 0, 1 and 2 s, the default second apart; analysed 4 times a second with checks
    0.6 s apart: at 0, 0.75, 1.5 and 2.25 s (each the first frame 0.6 s or more after the last check). Every
    row has its label and probabilities; only the checked ones a verdict and a what-if."""
    path = clips.one_person(folder / "checks.mp4", seconds=3, fps=8)
    r = analyse_video(path, model, EVERY_FRAME)
    assert r.frames == len(r.rows) == 24 and r.people == [1] and r.check_every == 1.0
    assert [row["time"] for row in r.rows if row["checked"]] == [0.0, 1.0, 2.0]
    for row in r.rows:
        assert row["label"] == "happy" and sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-3)
        if row["checked"]:
            assert row["level"] in LEVELS and row["verdict"] and "Hide the" in row["what_if"]["sentence"]
        else:
            assert row["level"] is None and row["verdict"] is None and row["what_if"] is None
    j = r.to_json()
    assert j["frames_checked"] == 3 and j["check_every"] == 1.0 and sum(row["checked"] for row in j["rows"]) == 3
    assert j["method"] == "Occlusion" and j["clip_heatmaps"].startswith("Grad-CAM at layer3")

    r = analyse_video(path, model, 4, check_every=0.6)
    assert r.frames == 12 and [row["time"] for row in r.rows if row["checked"]] == [0.0, 0.75, 1.5, 2.25]
    assert r.to_json()["frames_checked"] == 4


def test_check_every_0_checks_every_face_of_every_frame(model, folder):
    """The old behaviour, for those who ask: every row checked, and the checked map drawn on the clip."""
    path = clips.one_person(folder / "every_check.mp4", seconds=1, fps=4)
    r = analyse_video(path, model, EVERY_FRAME, check_every=0)
    assert r.frames == len(r.rows) == 4
    assert all(row["checked"] and row["level"] in LEVELS and row["what_if"] for row in r.rows)
    assert r.to_json()["frames_checked"] == 4 and r.clip_heatmaps == r.heatmap_name
    with pytest.raises(ValueError, match="check_every"):
        analyse_video(path, model, EVERY_FRAME, check_every=-1)


def test_every_frame_gets_the_label_and_probabilities_a_photo_of_it_gets(model, folder):
    """Grace Hopper's face (no class near certain, so the mirror pass and the number format show in the
    probabilities) at 10 frames a second, every frame analysed and only the first checked. On the frames the
    detector ran (every DETECT_EVERY_S), the row is the photo's answer for that frame; on those between, where
    the face was followed, its box is within a few pixels of the photo's (the detector's own jitter), and so
    its probabilities near the photo's (here up to 0.16 apart, as far as the photo's own answer moves between
    neighbouring frames with that jitter) and its label the same."""
    path = clips.one_person(folder / "hopper.mp4", seconds=1.5, fps=10, face=clips.FACE_B)
    r = analyse_video(path, model, EVERY_FRAME, check_every=10)
    frames = [rgb for _, rgb in sample_frames(path, probe(path), EVERY_FRAME)]
    assert len(r.rows) == len(frames) == 15 and [row["checked"] for row in r.rows] == [True] + [False] * 14
    detected = 0
    for row, rgb in zip(r.rows, frames):
        photo = analyse(rgb, model, with_heatmaps=False).faces[0]  # (the photo's probabilities need no map)
        off = max(abs(row["probabilities"][c] - photo.probabilities[c]) for c in model.labels)
        assert row["label"] == photo.label and np.abs(np.subtract(row["box"], photo.box)).max() <= 8
        if row["box"] == list(photo.box):  # the detector's frame: the same crop
            detected += 1
            assert off < 1e-3, row["time"]
        else:
            assert off < 0.2, row["time"]
    assert DETECT_EVERY_S == 0.2 and 5 <= detected <= 10  # every other frame, about


def test_a_clip_with_no_face_says_so(model, folder):
    r = analyse_video(clips.no_face(folder / "cat.mp4", seconds=1, fps=2), model, 2, verdicts=False)
    assert r.frames == 2 and r.rows == [] and "No face found in any of the 2 frames" in r.messages[-1]
    assert 'data-people=""' in timeline.svg_html(r)


def _tiny(path, frames, fps, noise=False):
    rng = np.random.default_rng(0)
    with ClipWriter(path, fps) as w:
        for i in range(frames):
            w.write(rng.integers(0, 255, (64, 64, 3), np.uint8) if noise else np.full((32, 32, 3), i % 255, np.uint8))
    return path


def bad_videos(folder):
    files = {"empty": folder / "empty.mp4"}
    files["empty"].write_bytes(b"")
    files["text"] = folder / "notes.mp4"
    files["text"].write_text("not a video\n" * 50)
    good = clips.write([np.zeros((64, 64, 3), np.uint8)] * 10, folder / "plain.mp4", 5).read_bytes()
    files["truncated"] = folder / "truncated.mp4"  # its index (moov) is at the end: cut off
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["sound_only"] = folder / "sound.m4a"
    with av.open(str(files["sound_only"]), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in [*s.encode(frame), *s.encode()]:
            out.mux(p)
    files["still_picture"] = fx.PORTRAIT
    files["too_large"] = folder / "huge.mp4"
    with files["too_large"].open("wb") as f:  # sparse: takes no disk space
        f.truncate(MAX_VIDEO_BYTES + 1)
    files["too_long"] = _tiny(folder / "long.mp4", 2, 1 / (MAX_DURATION_S / 2 + 60))
    files["too_many_frames"] = _tiny(folder / "many.mp4", MAX_ANALYSED_FRAMES + 30, 30)
    return files


BAD = {
    "empty": "empty",
    "text": "not a video we can read, or it is corrupt or cut short",
    "truncated": "corrupt or cut short",
    "sound_only": r"no video stream \(only audio\)",
    "still_picture": "still picture, not a video",
    "too_large": r"100 MB; the limit is 100 MB",
    "too_long": r"lasts 12 min \d+ s; the limit is 10 min 0 s",
    "too_many_frames": rf"lasts 21.0 s: at every frame that is {MAX_ANALYSED_FRAMES + 30} frames to analyse, and "
                       rf"the limit is {MAX_ANALYSED_FRAMES} a clip\. Choose at most 28\.5 frames a second",
}


@pytest.fixture(scope="module")
def bad(folder):
    return bad_videos(folder)


@pytest.mark.parametrize("name", BAD)
def test_bad_video_gets_a_plain_message(model, bad, name):
    with pytest.raises(VideoError, match=BAD[name]):
        analyse_video(bad[name], model, EVERY_FRAME if name == "too_many_frames" else 2)


def test_a_clip_cut_short_keeps_the_frames_before_the_cut(folder):
    whole = _tiny(folder / "whole.mp4", 20, 5, noise=True)  # index at the front (ClipWriter's faststart), then the frames
    cut = folder / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    info, notes = probe(cut), []
    times = [t for t, _ in sample_frames(cut, info, EVERY_FRAME, notes)]
    assert info.duration == pytest.approx(4.0) and 3 <= len(times) < 20
    assert "cut short" in notes[-1] and "frames up to there were analysed" in notes[-1]


def test_timeline_marks_each_persons_label_changes(model):
    def row(t, person, label):
        p = {c: (0.9 if c == label else 0.1 / 6) for c in model.labels}
        return {"time": t, "person": person, "box": [0, 0, 1, 1], "label": label, "probabilities": p,
                "smoothed": p, "smoothed_label": label, "level": None, "verdict": None}
    rows = [row(0, 1, "happy"), row(0, 2, "sad"), row(1, 1, "happy"), row(1, 2, "neutral"), row(2, 1, "angry")]
    changes = [{"person": 2, "time": 1, "from": "sad", "to": "neutral"},
               {"person": 1, "time": 2, "from": "happy", "to": "angry"}]
    r = VideoResult("x.mp4", 3.0, 1, False, 3, tuple(model.labels), rows, changes)
    h = timeline.svg_html(r)
    assert 'data-people="1,2"' in h and 'data-changes="2"' in h and 'data-t1="3.0000"' in h
    for gid in ("person-1", "person-2", "person-1-happy", "person-2-neutral", "change-1-1", "change-2-1"):
        assert f'id="{gid}"' in h
    assert 'id="change-1-2"' not in h
    assert "Person 1 (0.0-2.0 s): happy from 0.0 s, angry from 2.0 s" in h
    assert "Person 2 (0.0-1.0 s): sad from 0.0 s, neutral from 1.0 s" in h


def test_the_docs_state_the_limits_the_code_holds():
    text = " ".join((fx.ROOT / "docs" / "app.md").read_text().split())  # "Using the app", Videos and folders
    assert (f"files up to {MAX_VIDEO_BYTES // 2**20} MB and {MAX_DURATION_S / 60:.0f} minutes, at most "
            f"{MAX_ANALYSED_FRAMES} frames analysed a clip") in text


def test_a_sound_track_is_noted_and_the_pictures_still_read(folder):
    path = clips.write([np.full((64, 64, 3), 100, np.uint8)] * 4, folder / "with_sound.mp4", 4, audio=True)
    info = probe(path)
    assert info.notes == ["The sound track is not analysed and is left out of the annotated clip."]
    assert len(list(sample_frames(path, info, EVERY_FRAME))) == 4


def test_a_large_clips_boxes_are_in_its_own_pixels_as_a_photos_are(model, folder):
    """A 1920 x 1080 clip is analysed at 960 px, but its rows give boxes in the clip's own pixels, as the same
    frame's photo analysis does (and the CLI's CSV mixes photos and videos in the same columns)."""
    from emotion.pipeline import analyse

    path = clips.one_person(folder / "large.mp4", seconds=1, fps=2, size=(1920, 1080))
    r = analyse_video(path, model, 2, verdicts=False)
    assert r.to_json()["frame_size"] == [1920, 1080] and len(r.rows) == 2
    first = next(iter(sample_frames(path, probe(path), 2, side=None)))[1]
    assert first.shape == (1080, 1920, 3)
    photo = analyse(first, model, with_heatmaps=False).faces[0].box
    assert photo[2] - photo[0] > 300  # about 400 px: a box in full-size pixels (at the 960 px analysed, about 200)
    assert np.abs(np.subtract(r.rows[0]["box"], photo)).max() <= 4
    assert r.to_json()["rows"][0]["box"] == r.rows[0]["box"]
