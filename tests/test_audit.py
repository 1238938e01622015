"""Honest explanations: region shares, faithfulness against random maps, and the audit report's numbers."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from emotion import regions as R
from emotion.explain import DEFAULT_METHOD
from emotion.faithfulness import LEVELS, face_faithfulness, other_class
from emotion.model import CLASSES, load_model
from emotion.pipeline import analyse
from tests import fixtures as fx
from train import audit
from train import report as report_module
from train.data import list_split


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """32 px inputs gain nothing from a second thread, and lose a lot when another process holds the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# a frontal face in a 100 x 100 crop: eyes 40 px apart
MARKS = ((30.0, 40.0), (70.0, 40.0), (50.0, 60.0), (35.0, 78.0), (65.0, 78.0))
FACE_BOX = (15, 10, 85, 98)
CROP = (0, 0, 100, 100)


def blob(points, size=50, crop=CROP):
    """A heatmap over `crop` with unit mass on the pixel holding each picture point."""
    h = np.zeros((size, size), np.float32)
    x0, y0, x1, y1 = crop
    for x, y in points:
        h[int((y - y0) / (y1 - y0) * size), int((x - x0) / (x1 - x0) * size)] += 1
    return h


def test_region_shares_of_hand_built_maps():
    cases = {"eyes_brows": [(30, 36)], "mouth": [(50, 80)], "nose": [(50, 56)], "rest_of_face": [(22, 65)],
             "outside_face": [(2, 2)]}
    for region, pts in cases.items():
        s = R.region_shares(blob(pts), CROP, MARKS, FACE_BOX)
        assert s[region] == pytest.approx(1.0), (region, s)
    s = R.region_shares(blob([(50, 80), (2, 2), (2, 97), (70, 40)]), CROP, MARKS, FACE_BOX)
    assert s == pytest.approx({"eyes_brows": 0.25, "nose": 0.0, "mouth": 0.25, "rest_of_face": 0.0,
                               "outside_face": 0.5})
    # any map: shares sum to 1 and masks partition the crop
    rnd = np.random.default_rng(0).random((64, 64))
    assert sum(R.region_shares(rnd, CROP, MARKS, FACE_BOX).values()) == pytest.approx(1.0)
    masks = R.region_masks(64, CROP, MARKS, FACE_BOX)
    assert np.array_equal(sum(m.astype(int) for m in masks.values()), np.ones((64, 64), int))
    # the crop square may sit anywhere in the picture (and leave it): only relative positions matter
    moved = tuple((x + 500, y - 20) for x, y in MARKS)
    box = (FACE_BOX[0] + 500, FACE_BOX[1] - 20, FACE_BOX[2] + 500, FACE_BOX[3] - 20)
    assert R.region_shares(rnd, (500, -20, 600, 80), moved, box) == pytest.approx(
        R.region_shares(rnd, CROP, MARKS, FACE_BOX))
    assert R.region_shares(np.zeros((8, 8)), CROP, MARKS, FACE_BOX) == {k: 0.0 for k in R.REGIONS}


def test_template_for_faces_without_landmarks():
    crop = (0, 0, 48, 48)
    marks, box = R.template(crop)
    assert marks[0][0] < marks[1][0] and marks[2][1] < marks[3][1]  # right eye left of left eye, nose above mouth
    rnd = np.random.default_rng(1).random((32, 32))
    assert R.region_shares(rnd, crop) == pytest.approx(R.region_shares(rnd, crop, marks, box))
    mouth = ((marks[3][0] + marks[4][0]) / 2, marks[3][1])
    assert R.region_shares(blob([mouth], 48, crop), crop)["mouth"] == pytest.approx(1.0)
    tinted = R.draw_regions(np.full((48, 48, 3), 128, np.uint8))
    assert tinted.shape == (48, 48, 3) and len({tuple(p) for p in tinted.reshape(-1, 3)}) >= 4


def test_randomisation_leaves_nothing_when_nothing_is_randomised(tiny_model):
    rnd = np.random.default_rng(0).random((16, 16))
    assert audit.rank_correlation(rnd, rnd) == pytest.approx(1.0)
    assert np.isnan(audit.rank_correlation(rnd, np.zeros((16, 16))))
    same = audit.randomised_copy(tiny_model, ())
    changed = audit.randomised_copy(tiny_model, ("fc",))
    for name, p in tiny_model.net.fc.named_parameters():
        assert torch.equal(p, dict(same.net.fc.named_parameters())[name])
        assert not torch.equal(p, dict(changed.net.fc.named_parameters())[name])


def test_group_gap_by_hand():
    y_true = np.zeros(40, int)
    y_pred = np.r_[np.zeros(20, int), np.zeros(10, int), np.ones(10, int)]  # a: 100 %, b: 50 %
    groups = np.array(["a"] * 20 + ["b"] * 20)
    gap = audit.group_gap(y_true, y_pred, groups, 7, n_boot=300, min_size=5, seed=0)
    acc = gap["accuracy_gap"]
    assert acc["gap"] == pytest.approx(0.5) and (acc["best"], acc["worst"]) == ("a", "b")
    assert acc["ci95"][0] <= 0.5 <= acc["ci95"][1] and acc["p_value"] < 0.01
    assert audit.group_gap(y_true, y_pred, groups, 7, 100, min_size=30, seed=0)["compared_groups"] == []


def test_what_if_rate_gap_and_sentences_by_hand():
    from train.report import whatif_sentences

    values = np.array([1.0] * 18 + [0.0] * 2 + [1.0] * 2 + [0.0] * 18 + [np.nan] * 5)  # 90 % against 10 %
    groups = np.array(["a"] * 20 + ["b"] * 20 + ["a"] * 5)
    gap = audit.rate_gap(values, groups, n_boot=300, min_size=5, seed=0)
    assert gap["rates"] == pytest.approx({"a": 0.9, "b": 0.1}) and gap["gap"] == pytest.approx(0.8)
    assert (gap["highest"], gap["lowest"]) == ("a", "b") and gap["ci95"][0] < 0.8 < gap["ci95"][1]
    assert gap["p_value"] < 0.01
    assert "note" in audit.rate_gap(values, groups, 100, min_size=25, seed=0)
    figures = audit.whatif_figures([{"eyes_brows": (False, 0.0), "nose": (False, 0.1), "mouth": (True, 0.8),
                                     "rest_of_face": (False, 0.0)}] * 9
                                   + [{"eyes_brows": (True, 0.5), "nose": (False, 0.0), "mouth": (False, 0.1),
                                       "rest_of_face": (False, 0.0)}, None])
    assert figures["n"] == 10 and figures["mouth"]["flip_rate"] == pytest.approx(0.9)
    assert figures["mouth"]["mean_drop"] == pytest.approx(0.73)
    said = whatif_sentences({"happy": figures})
    assert said[0].startswith("happy depends on the mouth on 9 faces in 10")


def built_answers(items) -> list[int]:
    """What tiny_model was built to answer: the true class, except every third picture: the next class."""
    return [c if k % 3 else (c + 1) % len(CLASSES) for k, (_, c) in enumerate(items)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, data):
    """A random ResNet50 at 32 px whose classifier is solved (least squares on its features) to give the
    generated pictures their labels, except every third, which it confidently puts in the next class."""
    _, items, _, _ = data
    folder = fx.solved_model([p for p, _ in items], built_answers(items), tmp_path_factory.mktemp("tiny") / "model")
    return load_model(folder, fallback=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = fx.make_class_folders(tmp_path_factory.mktemp("audit_data") / "faces", per_class=2)
    items = list_split("folder", root, None)
    groups = {}
    rows = []
    for k, (path, _) in enumerate(items):
        g = {"gender": "f" if k % 2 else "m", "age": ["young", "old", "mid"][k % 3]}
        groups[str(path)] = g
        key = str(path) if k % 2 else path.relative_to(root).as_posix()  # both ways of naming a file
        rows.append([key, g["gender"], g["age"]])
    unreadable = root.parent / "unreadable.jpg"  # counts as a wrong answer for its group
    unreadable.write_text("not a picture")
    groups[str(unreadable)] = {"gender": "m", "age": "young"}
    rows.append([str(unreadable), "m", "young"])
    csv_path = root.parent / "groups.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "gender", "age"])
        w.writerows(rows)
    return root, items, groups, csv_path


def test_audit_numbers_match_a_hand_computation(tiny_model, data, tmp_path):
    root, items, groups, csv_path = data
    unreadable = root.parent / "unreadable.jpg"
    out = tmp_path / "report"
    s = audit.run_audit(tiny_model, items + [(unreadable, 0)], out, data_root=root, dataset="folder", faithfulness_limit=2,
                        sanity_limit=2, n_random=4, n_mistakes=3, groups=csv_path, bootstrap=100, min_group_size=3,
                        progress=False, sanity_stages=((), ("fc", "layer4")), layer="layer3")
    # every file of the report is there, and summary.json is what run_audit returned
    for name in ("report.html", "summary.json", "confusion_matrix.png", "maps_true_class.png",
                 "maps_predicted_class.png", "regions_per_class.png", "faithfulness.png", "sanity.png",
                 "regions_per_group.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["accuracy"] == pytest.approx(s["accuracy"])

    # the answers the model was built to give; the unreadable picture counts as wrong (no answer)
    y = np.array([label for _, label in items] + [0])
    pred = np.array(built_answers(items) + [-1])
    assert s["n"] == len(items) + 1 and s["unreadable"] == 1
    assert s["accuracy"] == pytest.approx(np.mean(y == pred)) and 0 < s["accuracy"] < 1
    recalls = [np.mean(pred[y == c] == c) for c in range(7)]
    assert s["mean_class_accuracy"] == pytest.approx(np.mean(recalls))
    assert s["per_class_accuracy"]["angry"] == pytest.approx(recalls[0])
    assert s["confusion_matrix"][0][-1] == 1 and np.sum(s["confusion_matrix"]) == len(items) + 1

    # region shares recomputed face by face through the pipeline
    shares = []
    for path, _ in items:
        f = analyse(path, tiny_model, whole_image=True, layer="layer3").faces[0]
        shares.append(R.face_region_shares(f) if f.heatmap.any() else None)  # empty maps have no shares
        assert shares[-1] is None or sum(shares[-1].values()) == pytest.approx(1.0)
    assert sum(s["region_shares"]["flat_map"].values()) == pytest.approx(1.0)
    assert s["region_shares"]["flat_map"]["outside_face"] == pytest.approx(
        R.region_shares(np.ones((64, 64)), (0, 0, 64, 64))["outside_face"], abs=0.01)  # the template's area
    assert s["outside_face_share"] == pytest.approx(np.mean([sh["outside_face"] for sh in shares if sh]), abs=1e-6)
    for c, name in enumerate(CLASSES):
        mine = [sh for sh, t in zip(shares, y) if t == c and sh]
        assert s["region_shares"]["per_true_class"][name]["mouth"] == pytest.approx(np.mean([m["mouth"] for m in mine]))

    # the what-if recomputed face by face through the pipeline: per predicted class, how often hiding each
    # region changes the label
    from emotion.whatif import HIDDEN, what_if

    flips = {}
    for path, _ in items:
        a = analyse(path, tiny_model, whole_image=True, layer="layer3")
        w = what_if(tiny_model, a.faces[0], a.scale)
        flips.setdefault(a.faces[0].label, []).append([w["regions"][r]["changes_label"] for r in HIDDEN])
    for name, rows in flips.items():
        got = s["what_if"]["per_predicted_class"][name]
        assert got["n"] == len(rows)
        assert [got[r]["flip_rate"] for r in HIDDEN] == pytest.approx(np.mean(rows, 0).tolist())
    assert s["what_if"]["all"]["n"] == len(items)
    assert "What if a part of the face were hidden?" in (out / "report.html").read_text()

    # fairness per group, by hand: the per-group figures and the gaps between them agree
    fair = s["fairness"]
    assert fair["matched"] == len(items) + 1 and fair["unmatched"] == 0
    sources = [p for p, _ in items] + [unreadable]
    for attr in ("gender", "age"):
        accs, mcas = {}, {}
        for gname in {g[attr] for g in groups.values()}:
            idx = np.array([groups[str(p)][attr] == gname for p in sources])
            accs[gname] = np.mean(y[idx] == pred[idx])
            mcas[gname] = np.mean([np.mean(pred[idx & (y == c)] == c) for c in range(7) if (idx & (y == c)).any()])
            got = fair["attributes"][attr]["groups"][gname]
            assert got["n"] == idx.sum() and got["accuracy"] == pytest.approx(accs[gname])
            assert got["mean_class_accuracy"] == pytest.approx(mcas[gname]), (attr, gname)
        gaps = fair["attributes"][attr]
        assert gaps["accuracy_gap"]["gap"] == pytest.approx(max(accs.values()) - min(accs.values()))
        for r, gp in gaps["what_if_gaps"].items():  # each group's flip rate, as its own what-if figures say
            if "rates" in gp:
                assert gp["rates"] == pytest.approx({g: v["what_if"][r]["flip_rate"]
                                                     for g, v in gaps["groups"].items() if g in gp["rates"]})
        assert gaps["mean_class_accuracy_gap"]["gap"] == pytest.approx(max(mcas.values()) - min(mcas.values()))

    # faithfulness: one figure per method and the random control; the sanity check's identity is exact
    assert set(s["faithfulness"]) == set(audit.METHODS) | {"random"}
    assert all(np.isfinite(v) for v in s["faithfulness"].values())
    assert s["faithfulness_detail"]["Grad-CAM"]["n"] == 2
    # ROAD beside it, on the same 2 faces for every method: each face whose map is not empty is compared
    assert s["settings"]["road_images"] == 2 and s["road"] is s["faithfulness_by_layer"]["layer3"][DEFAULT_METHOD]["road"]
    for m, v in s["faithfulness_by_layer"]["layer3"].items():
        rd = v["road"]
        assert rd["n"] == round(2 * (1 - v["share_empty"])), m
        assert (rd["mean"]["other_class"] is None) == (m == "Eigen-CAM"), m  # class-agnostic: no other-class map
        assert all(np.isfinite(x) for x in rd["mean"].values() if x is not None)
    assert s["sanity"]["nothing"]["mean_rank_correlation"] == pytest.approx(1.0)
    assert s["sanity_rank_correlation"] == s["sanity"]["fc+layer4"]["mean_rank_correlation"]
    assert "Fairness" in (out / "report.html").read_text()


def test_audit_cli_without_groups(tiny_model, data, tmp_path, capsys):
    root, _, _, _ = data
    out = tmp_path / "cli"
    s = audit.main(["--weights", tiny_model.source, "--data", str(root), "--dataset", "folder", "--limit", "6",
                    "--faithfulness-limit", "1", "--sanity-limit", "1", "--methods", "grad-cam", "--n-random", "3",
                    "--mistakes", "2", "--layer", "layer3", "--out", str(out), "--no-progress"])
    assert s["n"] == 6 and s["fairness"] is None
    assert set(s["faithfulness"]) == {"Grad-CAM", "random"}
    for key in ("accuracy", "mean_class_accuracy", "per_class_accuracy", "confusion_matrix", "faithfulness",
                "controls", "false_good_rate", "sanity_rank_correlation", "outside_face_share", "fairness"):
        assert key in json.loads((out / "summary.json").read_text())
    report = (out / "report.html").read_text()
    assert "No groups file" in report
    assert s["settings"]["road_images"] == 1 and "An independent metric: ROAD" in report and "ms a face" in report
    with pytest.raises(SystemExit):
        audit.parse_args(["--data", str(root), "--road-percentiles", "20", "100"])
    # the report is drawn from summary.json alone: written again from it, it is the same page
    (out / "report.html").unlink()
    (out / "faithfulness.png").unlink()
    assert report_module.main([str(out)]) == out / "report.html"
    assert (out / "report.html").read_text() == report and (out / "faithfulness.png").is_file()
    # the verdicts re-judged at other margins: at today's MARGIN they are the verdicts given, and a larger
    # margin never makes more maps good
    from emotion.faithfulness import MARGIN
    for table in s["faithfulness_by_layer"].values():
        for v in table.values():
            now = v["by_margin"][f"{MARGIN:g}"]
            assert now["share_good"] == v["share_good"] and now["false_good_rate"] == v["false_good_rate"]
            goods = [b["share_good"] for b in v["by_margin"].values()]
            assert goods == sorted(goods, reverse=True)
    assert "report:" in capsys.readouterr().out


def test_face_faithfulness_on_a_pipeline_face(tiny_model):
    face = analyse(fx.class_image(3, size=48, colour=True), tiny_model, whole_image=True, layer="layer3").faces[0]
    r = face_faithfulness(tiny_model, face, layer="layer3", n_random=3, seed=1)
    assert r["target"] == face.explained and 0 <= r["beats_random"] <= 3 and len(r["random_scores"]) == 3
    assert r["level"] in LEVELS and r["verdict"]
    assert r["other_class"] == other_class(face.probabilities, face.explained) != face.explained


def test_a_model_listing_its_classes_in_another_order_is_scored_by_name(tiny_model, data, tmp_path):
    """The same classifier saved with FER2013's csv order of classes (as Hub models often are): evaluation
    and audit compare by class name, so they give the answers it was built to give."""
    from safetensors.torch import load_file, save_file

    from train import evaluate
    from train.data import FER_CSV_LABELS

    root, items, _, _ = data
    order = [CLASSES.index(name) for name in FER_CSV_LABELS]
    assert order != list(range(len(CLASSES)))
    folder = tmp_path / "csv_order"
    folder.mkdir()
    cfg = json.loads((Path(tiny_model.source) / "config.json").read_text())
    cfg["label_names"] = list(FER_CSV_LABELS)
    (folder / "config.json").write_text(json.dumps(cfg))
    w = load_file(Path(tiny_model.source) / "model.safetensors")
    w["fc.weight"], w["fc.bias"] = w["fc.weight"][order].contiguous(), w["fc.bias"][order].contiguous()
    save_file(w, folder / "model.safetensors", metadata={"format": "pt"})
    permuted = load_model(folder, fallback=False)
    assert permuted.labels == tuple(FER_CSV_LABELS)

    y = np.array([label for _, label in items])
    want = np.mean(y == np.array(built_answers(items)))
    m = evaluate.main(["--weights", str(folder), "--data", str(root), "--dataset", "folder",
                       "--out", str(tmp_path / "eval"), "--no-progress"])
    assert m["accuracy"] == pytest.approx(want)
    assert [row[i] for i, row in enumerate(m["confusion_matrix"])] == [
        sum(1 for (_, c), p in zip(items, built_answers(items)) if c == p == k) for k in range(len(CLASSES))]
    s = audit.run_audit(permuted, items, tmp_path / "audit", data_root=root, faithfulness_limit=0, sanity_limit=0,
                        progress=False, layer="layer3")
    assert s["accuracy"] == pytest.approx(want)
    assert s["per_class_accuracy"] == m["per_class_accuracy"]


def test_verdicts_re_judged_at_other_margins():
    """A map scoring 3.0 against a face prior of 1.2 and another class's 1.0 is good up to a margin of 1.5
    (3.0 must exceed 1.2 + 1.5 * 1.2); its inverted map (1.1) is never good; an untestable map stays so."""
    def result(score, level):
        return {"score": score, "level": level, "controls": {"face_prior": 1.2, "other_class": 1.0, "random": 0.5},
                "random_scores": [0.5], "class_agnostic": False, "lead": score - 1.2, "beats_random": 1,
                "n_random": 1, "ms": 1.0}

    assert [audit._level_at(result(3.0, "good"), g) for g in (0.5, 1.0, 1.5, 2.0)] == ["good", "good", "weak", "weak"]
    assert audit._level_at(result(0.1, "untestable"), 0.0) == "untestable"
    rows = [{"map": result(3.0, "good"), "inverted": result(1.1, "weak")},
            {"map": result(2.0, "weak"), "inverted": result(0.4, "chance")}]
    by = audit.faithfulness_figures(rows)["by_margin"]
    # (2.0 against 1.2: good below a margin of 2/3, so at 0.625 and not at 0.75; 3.0: good up to 1.5)
    assert {g: b["share_good"] for g, b in by.items()} == {"0": 1.0, "0.25": 1.0, "0.5": 1.0, "0.625": 1.0,
                                                            "0.75": 0.5, "0.875": 0.5, "1": 0.5, "1.25": 0.5,
                                                            "1.5": 0.0, "2": 0.0, "3": 0.0}
    assert all(b["false_good_rate"] == 0.0 and (b["false_good_k"], b["false_good_n"]) == (0, 2) for b in by.values())
    # none of 2 uninformative maps passed, but 2 faces cannot show a rate under 5%: no margin is calibrated
    assert audit.calibrate(rows) == (float("inf"), 0, 2)
    assert audit.calibrate(rows * 40)[0] == 0.0  # none of 80: the smallest margin holds


def test_a_class_we_do_not_score_is_named_as_the_model_names_it(tiny_model, data, tmp_path):
    """tiny_model relabelled so that its last class is contempt (none of ours): the faces it puts there
    count as wrong, and the mistakes list says contempt, not one of our classes."""
    root, items, _, _ = data
    folder = tmp_path / "with_contempt"
    folder.mkdir()
    cfg = json.loads((Path(tiny_model.source) / "config.json").read_text())
    cfg["label_names"] = [*CLASSES[:-1], "contempt"]
    (folder / "config.json").write_text(json.dumps(cfg))
    shutil.copy(Path(tiny_model.source) / "model.safetensors", folder / "model.safetensors")
    model = load_model(folder, fallback=False)
    s = audit.run_audit(model, items, tmp_path / "audit", data_root=root, faithfulness_limit=0, sanity_limit=0,
                        progress=False, layer="layer3", n_mistakes=len(items))
    last = len(CLASSES) - 1
    answers = built_answers(items)
    assert s["accuracy"] == pytest.approx(np.mean([a == c != last for a, (_, c) in zip(answers, items)]))
    named = sorted(m["pred"] for m in s["confident_mistakes"] if m["pred"] == "contempt")
    assert len(named) == sum(a == last for a in answers) > 0
    assert all(m["pred"] != m["true"] for m in s["confident_mistakes"])


@pytest.fixture(scope="module")
def rafdb(tmp_path_factory):
    """RAF-DB's official layout with its manual annotations, and a model built to answer its test split as
    fx.rafdb_answers says: every second female face wrong, every other face right."""
    root = fx.make_rafdb_groups(tmp_path_factory.mktemp("rafdb") / "RAF-DB")
    items = list_split("rafdb", root, "test")
    true, answers = fx.rafdb_answers()
    assert [label for _, label in items] == true  # the label file's order is the order the fixture wrote
    folder = fx.solved_model([p for p, _ in items], answers, tmp_path_factory.mktemp("rafdb_model") / "model")
    return root, items, folder


def test_fairness_on_rafdb_manual_annotations_without_a_csv(rafdb, tmp_path):
    """--dataset rafdb: the groups are RAF-DB's own annotations of gender, race and age, and each group's
    figures are those the fixture was built to give; groups under --min-group-size are shown, not compared."""
    root, items, folder = rafdb
    out = tmp_path / "audit"
    s = audit.main(["--weights", str(folder), "--data", str(root), "--dataset", "rafdb", "--split", "test",
                    "--faithfulness-limit", "8", "--sanity-limit", "0", "--methods", "grad-cam",
                    "--faith-layers", "layer3", "--layer", "layer3", "--n-random", "2", "--mistakes", "2",
                    "--bootstrap", "200", "--min-group-size", "3", "--road-limit", "0", "--out", str(out),
                    "--no-progress"])
    fair = s["fairness"]
    assert "RAF-DB's manual annotations" in fair["groups_file"] and fair["matched"] == len(items) == 28
    assert list(fair["attributes"]) == ["gender", "race", "age"]
    true, answers = fx.rafdb_answers()
    y, pred = np.array(true), np.array(answers)
    codes = np.array([fx.rafdb_codes("test", j) for j in range(len(items))])
    names = {"gender": ("male", "female", "unsure"), "race": ("Caucasian", "African-American", "Asian"),
             "age": ("0-3", "4-19", "20-39", "40-69", "70+")}
    assert s["accuracy"] == pytest.approx(np.mean(y == pred)) and s["accuracy"] == pytest.approx(21 / 28)
    verdict_total = {level: 0.0 for level in LEVELS}
    for a, (attr, groups) in enumerate(names.items()):
        got = fair["attributes"][attr]
        present = sorted((g for k, g in enumerate(groups) if (codes[:, a] == k).any()),
                         key=lambda g: (not g[0].isdigit(), int(g.split("-")[0].rstrip("+")) if g[0].isdigit() else g))
        assert list(got["groups"]) == present  # age groups by age ("4-19" before "20-39"), others by name
        acc = {}
        for k, g in enumerate(groups):
            idx = codes[:, a] == k
            if not idx.any():
                continue
            v = got["groups"][g]
            acc[g] = np.mean(y[idx] == pred[idx])
            mca = np.mean([np.mean(pred[idx & (y == c)] == c) for c in range(7) if (idx & (y == c)).any()])
            cm = np.zeros((7, 8), int)
            np.add.at(cm, (y[idx], pred[idx]), 1)
            assert v["n"] == idx.sum() and v["accuracy"] == pytest.approx(acc[g]), (attr, g)
            assert v["mean_class_accuracy"] == pytest.approx(mca) and v["confusion_matrix"] == cm.tolist(), (attr, g)
            # the verdicts of the group's faces among the 8 judged
            judged = v["verdicts"]["n"]
            assert judged <= idx.sum() and (judged == 0 or sum(v["verdicts"][lv] for lv in LEVELS) == pytest.approx(1))
            for lv in LEVELS if attr == "gender" and judged else ():
                verdict_total[lv] += v["verdicts"][lv] * judged
        assert sum(v["verdicts"]["n"] for v in got["groups"].values()) == 8
        big = [g for g in acc if (codes[:, a] == groups.index(g)).sum() >= 3]
        assert sorted(got["compared_groups"]) == sorted(big)  # unsure (1 face) and 70+ (1 face) are shown but not compared
        gap = got["accuracy_gap"]
        assert gap["gap"] == pytest.approx(max(acc[g] for g in big) - min(acc[g] for g in big))
        assert gap["ci95"][0] <= gap["ci95"][1] and 0 < gap["p_value"] <= 1
    gender = fair["attributes"]["gender"]
    assert gender["groups"]["male"]["accuracy"] == 1.0 and gender["groups"]["female"]["accuracy"] == pytest.approx(6 / 13)
    assert (gender["accuracy_gap"]["best"], gender["accuracy_gap"]["worst"]) == ("male", "female")
    assert gender["accuracy_gap"]["gap"] == pytest.approx(7 / 13)
    own = s["faithfulness_by_layer"]["layer3"]["Grad-CAM"]
    assert own["n"] == 8 and all(verdict_total[lv] == pytest.approx(own[f"share_{lv}"] * 8) for lv in LEVELS)
    # where each group's heatmaps lie: the mean of its faces' region shares, recomputed through the pipeline
    male = [p for j, (p, _) in enumerate(items) if codes[j, 0] == 0]
    shares = [R.face_region_shares(f) for f in (analyse(p, load_model(folder, fallback=False), whole_image=True,
                                                        method="Grad-CAM", layer="layer3").faces[0] for p in male)
              if f.heatmap.any()]  # the main heatmaps are those of the one method compared (--methods grad-cam)
    assert gender["groups"]["male"]["regions"]["mouth"] == pytest.approx(np.mean([sh["mouth"] for sh in shares]))
    report = (out / "report.html").read_text()
    assert s["road"] is None and "ROAD</h3><p>Not computed" in report  # --road-limit 0
    assert "RAF-DB&#x27;s manual annotations" in report and "confusion matrix: gender female (n=13)" in report
    assert (out / "regions_per_group.png").is_file()


def test_rafdb_annotations_read_from_the_zip_and_refused_when_wrong(rafdb, tmp_path):
    """RAF-DB ships the annotations as manual.zip: read from it they are the same; a code that is none of
    RAF-DB's is refused, naming the file; a data set without them gives no groups and says so."""
    import zipfile

    from train.data import DatasetError, rafdb_attributes

    root, items, _ = rafdb
    origin, rows = rafdb_attributes(root)
    assert origin.endswith("manual") and len(rows) == 2 * (7 + 28)  # both names of every picture
    assert rows[Path(items[1][0]).name] == {"gender": "female", "race": "African-American", "age": "20-39"}
    copy = tmp_path / "raf"
    shutil.copytree(root, copy)
    manual = copy / "basic" / "Annotation" / "manual"
    with zipfile.ZipFile(manual.parent / "manual.zip", "w") as z:
        for f in manual.iterdir():
            z.write(f, f"manual/{f.name}")
    shutil.rmtree(manual)
    assert rafdb_attributes(copy)[1] == rows
    (manual.parent / "manual.zip").unlink()
    assert audit.rafdb_groups(copy) is None  # no annotations: a note, no fairness figures
    manual.mkdir()
    (manual / "test_00008_manu_attri.txt").write_text("1 2\n3 4\n5 6\n7 8\n9 10\n1\n5\n2\n")
    with pytest.raises(DatasetError, match="test_00008_manu_attri.txt: race code 5"):
        rafdb_attributes(copy)
