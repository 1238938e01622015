"""The decision rule (emotion/decision.py): the balanced reading divides the training prior out everywhere the
app reads the model, evaluation reports both readings, and train.decide measures and writes the rule.

The model here is built to have a known answer: its classifier ignores the face (weights zero) and its bias
is log(prior) plus a small lead for "sad". Read with the prior, every face is neutral (the largest share);
with the prior divided out, only sad's lead is left, so every face is sad.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emotion.decision import Decision, reread
from emotion.model import CLASSES, Preprocess, create_net, load_model
from emotion.pipeline import analyse
from tests.fixtures import NO_FACE, PORTRAIT, make_class_folders, make_fer2013_folders
from train import decide, evaluate, paired
from train.export import save_model
from train.train import _init_model

ROOT = Path(__file__).resolve().parent.parent
PRIOR = {"angry": 0.08, "disgust": 0.01, "fear": 0.03, "happy": 0.2, "neutral": 0.5, "sad": 0.1, "surprise": 0.08}
LEAD = 0.05  # sad's extra logit


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    net = create_net().eval()
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.copy_(torch.tensor([math.log(PRIOR[c]) + (LEAD if c == "sad" else 0.0) for c in CLASSES]))
    return save_model(net, tmp_path_factory.mktemp("decision") / "model", Preprocess(size=48), training={},
                      fp16=False, decision=Decision(rule="balanced", prior=PRIOR))


def test_balanced_rule_divides_the_prior_out_of_what_the_app_shows(folder):
    balanced, plain = load_model(folder, fallback=False), load_model(folder, fallback=False, rule="prior")
    assert balanced.decision.rule == "balanced" and plain.decision.rule == "prior"
    a = analyse(ROOT / "examples" / "astronaut.jpg", balanced)
    face = a.faces[0]
    expected = np.exp([LEAD if c == "sad" else 0.0 for c in CLASSES])
    np.testing.assert_allclose([face.probabilities[c] for c in CLASSES], expected / expected.sum(), atol=1e-5)
    assert face.label == "sad" and face.explained == "sad"  # the heatmap is for the class shown
    assert a.to_json()["model"]["decision_rule"] == "balanced"
    p = analyse(ROOT / "examples" / "astronaut.jpg", plain).faces[0]
    assert p.label == "neutral" and p.explained == "neutral"
    shares = np.array([PRIOR[c] * (math.exp(LEAD) if c == "sad" else 1) for c in CLASSES])
    np.testing.assert_allclose([p.probabilities[c] for c in CLASSES], shares / shares.sum(), atol=1e-5)


def test_a_partial_balance_divides_out_tau_of_the_log_prior_and_says_so(folder, tmp_path):
    """tau 0.5: the shown probabilities are the prior's square root times sad's lead, and the API and the
    status line give the tau."""
    half = save_model(load_model(folder, fallback=False, rule="prior").net, tmp_path / "half", Preprocess(size=48),
                      training={}, fp16=False, decision=Decision(rule="balanced", tau=0.5, prior=PRIOR))
    m = load_model(half, fallback=False)
    a = analyse(ROOT / "examples" / "astronaut.jpg", m)
    shares = np.array([math.sqrt(PRIOR[c]) * (math.exp(LEAD) if c == "sad" else 1) for c in CLASSES])
    np.testing.assert_allclose([a.faces[0].probabilities[c] for c in CLASSES], shares / shares.sum(), atol=1e-5)
    assert a.faces[0].label == "neutral"  # sqrt(0.5) beats sqrt(0.1) x e^0.05
    assert a.to_json()["model"]["decision_rule"] == "balanced" and a.to_json()["model"]["decision_tau"] == 0.5
    assert m.name().endswith("probabilities read balanced (the training class balance divided out, tau 0.5)")


def test_the_file_keeps_the_network_own_scores_and_training_starts_from_them(folder):
    """The shift lives only in the loaded model: the weights file, and a model trained --init from it, keep the
    plain bias (a shift baked in at every stage would pile up)."""
    stored = load_file(folder / "model.safetensors")["fc.bias"]
    np.testing.assert_allclose(stored.numpy(), [math.log(PRIOR[c]) + (LEAD if c == "sad" else 0) for c in CLASSES],
                               atol=1e-6)
    start = _init_model(str(folder))
    np.testing.assert_allclose(start.net.fc.bias.detach().numpy(), stored.numpy(), atol=1e-6)


def test_reread_moves_between_rules_and_back():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=20).astype(np.float32)
    d = Decision(rule="prior", prior=PRIOR)
    b = reread(p, CLASSES, d, "balanced")
    expected = p / np.array([PRIOR[c] for c in CLASSES])
    np.testing.assert_allclose(b, expected / expected.sum(1, keepdims=True), rtol=1e-4)
    back = reread(b, CLASSES, Decision(rule="balanced", prior=PRIOR), "prior")
    np.testing.assert_allclose(back, p, rtol=1e-4, atol=1e-6)
    half = reread(p, CLASSES, d, "balanced", tau=0.5)
    expected = p / np.sqrt([PRIOR[c] for c in CLASSES])
    np.testing.assert_allclose(half, expected / expected.sum(1, keepdims=True), rtol=1e-4)


def test_evaluate_reports_both_readings(folder, tmp_path):
    root = make_fer2013_folders(tmp_path / "fer")  # PrivateTest: 2 pictures of each class
    m = evaluate.main(["--weights", str(folder), "--data", str(root), "--dataset", "fer2013",
                       "--split", "private_test", "--out", str(tmp_path / "eval"), "--no-progress"])
    assert m["decision_rule"] == "balanced"
    assert m["per_class_accuracy"] == {c: float(c == "sad") for c in CLASSES}  # the app's reading: always sad
    assert m["accuracy"] == pytest.approx(1 / 7)
    prior = m["readings"]["prior"]
    assert prior["per_class_accuracy"] == {c: float(c == "neutral") for c in CLASSES}  # always neutral
    assert m["readings"]["balanced"]["accuracy"] == m["accuracy"]
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["readings"]["prior"]["per_class_accuracy"]["neutral"] == 1.0


def test_decide_measures_both_rules_and_writes_the_prior(folder, tmp_path):
    root = make_fer2013_folders(tmp_path / "fer", per_class=3)  # training split: 3 of each class
    copy = tmp_path / "model"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    rows = decide.main(["--weights", str(copy), "--data", str(root), "--dataset", "fer2013", "--taus", "1",
                        "--write", "prior", "--no-progress"])
    # the validation split (PublicTest, 2 of each class) read both ways: always neutral, then always sad
    # (measured with the training prior, here uniform, which takes nothing out: the model's own prior is gone)
    assert [r["rule"] for r in rows] == ["prior", "balanced"]
    assert rows[0]["per_class_accuracy"]["neutral"] == 1.0
    assert rows[1]["per_class_accuracy"]["neutral"] == 1.0  # a uniform prior changes nothing
    cfg = json.loads((copy / "config.json").read_text())
    assert cfg["decision"]["rule"] == "prior"
    assert cfg["decision"]["prior"] == pytest.approx({c: 1 / 7 for c in CLASSES}, abs=1e-6)
    assert load_model(copy, fallback=False).decision.rule == "prior"
    assert "Decision rule: **prior**" in (copy / "README.md").read_text()


def test_decide_reads_a_second_set_beside_the_first(folder, tmp_path, capsys):
    """--also: a class-folder set (here angry, neutral and sad, 2 pictures each) read at the same rules; the
    model answers neutral by the prior, so a third of it is right, and only its classes get a column."""
    root = make_fer2013_folders(tmp_path / "fer", per_class=3)
    other = make_class_folders(tmp_path / "posed", per_class=2, names=["angry", "neutral", "sad"])
    rows = decide.main(["--weights", str(folder), "--data", str(root), "--dataset", "fer2013", "--taus", "0.5", "1",
                        "--also", str(other), "--no-progress"])
    assert [r["rule"] for r in rows] == ["prior", "balanced", "balanced"]
    for r in rows:
        assert r["also"]["accuracy"] == pytest.approx(1 / 3)
        assert r["also"]["per_class_accuracy"] == {c: {"neutral": 1.0, "angry": 0.0, "sad": 0.0}.get(c)
                                                   for c in CLASSES}
    table = capsys.readouterr().out.split("both sets")[1]
    assert "| second angry | second neutral | second sad |" in table and "second fear" not in table
    assert "| balanced | 0.5 | 14.3% | 14.3% | 33.3% | 33.3% | 0% | 100% | 0% |" in table


def test_decide_can_read_a_model_by_the_prior_it_keeps(folder, tmp_path):
    """--own-prior: the fixture keeps PRIOR, the prior its bias was built from, so dividing it out leaves sad's
    lead on every face; the training split's prior (uniform here) leaves every face neutral."""
    root = make_fer2013_folders(tmp_path / "fer", per_class=3)
    common = ["--weights", str(folder), "--data", str(root), "--dataset", "fer2013", "--taus", "1", "--no-progress"]
    own = decide.main(common + ["--own-prior"])
    assert own[1]["per_class_accuracy"] == {c: float(c == "sad") for c in CLASSES}
    split = decide.main(common)
    assert split[1]["per_class_accuracy"] == {c: float(c == "neutral") for c in CLASSES}


def test_mcnemar_p_is_the_two_sided_binomial_tail_of_the_disagreements():
    """Exact McNemar: with k faces only one model reads right out of n disagreements, p = 2 P(X <= min) for
    X ~ Binomial(n, 1/2), capped at 1."""
    def two_sided(a, b):
        n, k = a + b, min(a, b)
        return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    for a, b in [(0, 6), (1, 3), (13, 28), (61, 50), (7, 26)]:
        assert paired.mcnemar_p(a, b) == pytest.approx(two_sided(a, b), rel=1e-9)
        assert paired.mcnemar_p(b, a) == pytest.approx(two_sided(a, b), rel=1e-9)
    assert paired.mcnemar_p(0, 6) == pytest.approx(2 / 64)
    assert paired.mcnemar_p(0, 0) == 1.0


def always_happy(folder: Path) -> Path:
    """A model that ignores the face (weights zero) and answers happy by its bias, whatever the rule."""
    torch.manual_seed(0)
    net = create_net().eval()
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.copy_(torch.tensor([1.0 if c == "happy" else 0.0 for c in CLASSES]))
    return save_model(net, folder, Preprocess(size=48), training={}, fp16=False,
                      decision=Decision(rule="balanced", prior=PRIOR))


def test_paired_counts_the_faces_each_model_alone_reads_right(folder, tmp_path):
    """A (the fixture) answers neutral on every face, B (its bias on happy) happy on every face. On PublicTest
    (2 faces of each class) each alone reads 2 right; on a second set of 3 happy faces and 1 neutral, B alone 3
    and A alone 1, a split whose exact McNemar p is 2 x (1 + 4) / 16."""
    happy = always_happy(tmp_path / "happy")
    root = make_fer2013_folders(tmp_path / "fer", per_class=3)
    other = make_class_folders(tmp_path / "posed", per_class=3, names=["happy"])
    make_class_folders(other, per_class=1, names=["neutral"])
    out = paired.main([str(folder), str(happy), "--data", str(root), "--dataset", "fer2013", "--taus", "0.5", "1",
                       "--also", str(other), "--no-progress"])
    first, second = out["fer2013 public_test"], out["posed"]
    assert [r["rule"] for r in first] == ["prior", "balanced", "balanced"]
    for r in first:
        assert (r["n"], r["both"], r["only_a"], r["only_b"], r["neither"]) == (14, 0, 2, 2, 10)
        assert r["p"] == 1.0 and r["accuracy_a"] == r["accuracy_b"] == pytest.approx(2 / 14)
    for r in second:
        assert (r["n"], r["only_a"], r["only_b"]) == (4, 1, 3)
        assert r["p"] == pytest.approx(2 * 5 / 16)


def test_paired_through_the_detector_counts_a_picture_without_a_face_as_wrong_for_both(folder, tmp_path):
    """--detect-faces reads each picture as the app does. PublicTest here is the generated faces plus a real
    portrait filed under happy and a cat photo filed under neutral. Read as given, the happy model alone reads
    the portrait right and the neutral one alone the cat. Through the detector the generated pictures and the
    cat hold no face, so neither model answers them; the portrait's face is found and only the happy model reads
    it right."""
    happy = always_happy(tmp_path / "happy")
    root = make_fer2013_folders(tmp_path / "fer", per_class=1)
    shutil.copy(PORTRAIT, root / "test" / "happy" / "PublicTest_900.jpg")
    shutil.copy(NO_FACE, root / "test" / "neutral" / "PublicTest_901.jpg")
    common = [str(folder), str(happy), "--data", str(root), "--dataset", "fer2013", "--taus", "0.5",
              "--no-progress"]
    given = paired.main(common)["fer2013 public_test"]
    seen = paired.main(common + ["--detect-faces"])["fer2013 public_test through the detector"]
    for r in given:
        assert (r["n"], r["both"], r["only_a"], r["only_b"], r["neither"]) == (16, 0, 3, 3, 10)
    for r in seen:
        assert (r["n"], r["both"], r["only_a"], r["only_b"], r["neither"]) == (16, 0, 0, 1, 15)
        assert r["p"] == 1.0
