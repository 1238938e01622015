"""Distillation (train/distill.py, `python -m train --teacher`): the loss, what the teacher sees, and a real
training run in which the teacher's answers, not the labels, decide what the student learns."""
import json
import math

import pytest
import torch

from emotion.images import load_image
from emotion.model import CLASSES, load_model
from tests import fixtures as fx
from train import train
from train.distill import Teacher, distill_loss, ensemble_logits
from train.train import _init_model

FEAR, HAPPY = CLASSES.index("fear"), CLASSES.index("happy")


def test_the_loss_is_the_softened_kl_times_t_squared_and_process_shares_add_up():
    p, q = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([1 / 3] * 3)
    kl = 0.5 * math.log(1.5) + 2 * 0.25 * math.log(0.75)  # KL(p || q) by hand: 0.0589
    for t in (1.0, 2.0, 4.0):  # logits t * log(p): softened by t they are p again
        teacher, student = (t * p.log()).repeat(4, 1), (t * q.log()).repeat(4, 1)
        assert distill_loss(student, teacher, t).item() == pytest.approx(t * t * kl, rel=1e-5)
        # two halves of the batch, each divided by the whole batch's rows, add up to the whole
        halves = [distill_loss(student[s], teacher[s], t, rows=4) for s in (slice(0, 2), slice(2, 4))]
        assert sum(halves).item() == pytest.approx(t * t * kl, rel=1e-5)
    same = torch.randn(5, 7)
    assert distill_loss(same + 3.0, same, 2.0).item() == pytest.approx(0.0, abs=1e-6)  # a shift changes no softmax


def test_the_teacher_sees_the_students_faces_at_its_own_side_colour_and_normalisation(tmp_path):
    folder = fx.constant_teacher(tmp_path / "t", "fear", size=32, mean=0.4, std=0.3)
    teacher = Teacher(_init_model(str(folder), "--teacher"),
                      student_mean=(0.5, 0.5, 0.5), student_std=(0.25, 0.25, 0.25), student_grey=False,
                      device=torch.device("cpu"), bf16=False)
    rgb = torch.tensor([0.2, 0.6, 0.9]).view(1, 3, 1, 1).expand(2, 3, 48, 48)  # one colour, as pixels
    seen = teacher.inputs((rgb - 0.5) / 0.25)  # the student's normalised 48 px batch
    luma = 0.299 * 0.2 + 0.587 * 0.6 + 0.114 * 0.9  # a grey teacher sees the colour as OpenCV's grey
    assert seen.shape == (2, 3, 32, 32)
    assert torch.allclose(seen, torch.full_like(seen, (luma - 0.4) / 0.3), atol=1e-5)
    # its answer lands in our fear column although its config lists the classes backwards
    logits = teacher.logits(torch.randn(3, 3, 48, 48))
    assert logits.argmax(1).tolist() == [FEAR] * 3 and logits[0, FEAR].item() == pytest.approx(10.0, abs=1e-4)


def tiny_run(root) -> list[str]:
    """A one-epoch run on the generated faces at `root`, big enough steps for a teacher to decide the answers."""
    return ["--dataset", "fer2013", "--data", str(root), "--train-split", "train", "--size", "48",
            "--epochs", "1", "--batch-size", "4", "--opt", "sgd", "--lr", "2", "--warmup-epochs", "0",
            "--drop-rate", "0", "--drop-path", "0", "--rule", "prior", "--threads", "2", "--no-progress"]


def student_probabilities(run, root) -> torch.Tensor:
    """The probabilities the run's best model gives each training face at `root` (rows class by class)."""
    student = load_model(run / "best", fallback=False, engine="torch")
    pictures = [p for c in CLASSES for p in sorted((root / "train" / c).iterdir())]
    with torch.no_grad():
        return student.net.eval()(student.prep.to_input([load_image(p).rgb for p in pictures])).softmax(1)


def test_a_student_taught_with_alpha_one_learns_the_teachers_answer_and_with_zero_the_labels_alone(tmp_path):
    """Seven balanced classes and a teacher that calls every face fear, or one that calls every face happy:
    with the whole loss on the teacher, the student calls every training face what its teacher does. With
    none on it (alpha 0), the run is the run without a teacher, weight for weight. The card says how it was taught."""
    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=4)
    common = tiny_run(root)
    for answer in ("fear", "happy"):
        teacher = fx.constant_teacher(tmp_path / answer, answer, size=32)
        run = tmp_path / f"taught-{answer}"
        train.main([*common, "--teacher", str(teacher), "--kd-alpha", "1", "--run-dir", str(run)])
        said = student_probabilities(run, root).argmax(1)
        assert said.tolist() == [CLASSES.index(answer)] * len(CLASSES) * 4, answer
    card = (run / "best" / "README.md").read_text()
    assert f"Distilled from `{teacher}` as it trained: the loss is 0 x the targets' cross-entropy + 1 x" in card
    recipe = json.loads((run / "best" / "results.json").read_text())["training"]["recipe"]
    assert (recipe["teacher"], recipe["kd_alpha"], recipe["kd_temp"]) == ([str(teacher)], 1.0, 2.0)

    train.main([*common, "--teacher", str(teacher), "--kd-alpha", "0", "--run-dir", str(tmp_path / "alpha0")])
    train.main([*common, "--run-dir", str(tmp_path / "plain")])
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=True)["model"] for r in ("alpha0", "plain"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "kd_alpha" not in json.loads((tmp_path / "plain" / "best" / "results.json").read_text())["training"]["recipe"]


def test_two_teachers_answer_as_one_and_the_student_learns_their_mean(tmp_path):
    """A teacher that says fear (logit 10) and one that says happy, averaged: fear 5, happy 5, every other class 0.
    A student taught by the pair alone (alpha 1) ranks fear and happy, and nothing else, first and second on
    every training face, each with a fair share (taught by the fear teacher alone, happy gets under 1e-5);
    its card names both teachers."""
    fear, happy = (fx.constant_teacher(tmp_path / a, a, size=32) for a in ("fear", "happy"))
    pair = [Teacher(_init_model(str(f), "--teacher"), (0.5,) * 3, (0.25,) * 3, True, torch.device("cpu"), False)
            for f in (fear, happy)]
    expected = torch.zeros(3, len(CLASSES))
    expected[:, [FEAR, HAPPY]] = 5.0
    assert torch.allclose(ensemble_logits(pair, torch.randn(3, 3, 48, 48)), expected, atol=1e-4)

    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=4)
    run = tmp_path / "taught-by-two"
    train.main([*tiny_run(root), "--teacher", str(fear), str(happy), "--kd-alpha", "1", "--run-dir", str(run)])
    said = student_probabilities(run, root)
    assert len(said) == len(CLASSES) * 4
    assert all(set(row.topk(2).indices.tolist()) == {FEAR, HAPPY} for row in said)
    assert said[:, FEAR].min() > 0.2 and said[:, HAPPY].min() > 0.2
    card = (run / "best" / "README.md").read_text()
    assert f"Distilled from `{fear}`, `{happy}` (their logits averaged) as it trained" in card


def test_a_teacher_with_other_classes_or_a_bad_share_is_refused(tmp_path):
    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=2)
    teacher = fx.constant_teacher(tmp_path / "teacher", "fear")
    common = ["--dataset", "fer2013", "--data", str(root), "--train-split", "train", "--size", "32",
              "--epochs", "1", "--batch-size", "7", "--threads", "2", "--no-progress", "--run-dir", str(tmp_path / "r")]
    with pytest.raises(SystemExit, match="--kd-alpha is a share"):
        train.main([*common, "--teacher", str(teacher), "--kd-alpha", "1.5"])
    cfg = json.loads((teacher / "config.json").read_text())
    cfg["label_names"][0] = "contempt"
    (teacher / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit, match="--teacher .* are not"):
        train.main([*common, "--teacher", str(teacher)])


def test_with_kd_whole_face_the_teacher_answers_on_the_students_faces_before_the_mouth_is_blanked(tmp_path, monkeypatch):
    """--erase-mouth 1 blanks every training face from 72% of its height down at the latest. With
    --kd-whole-face the teacher is shown the very faces the student saw, mouth and chin still there; without it,
    the blanked ones. The card says which; the flag without a blanked mouth to show is refused."""
    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=2)
    teacher = fx.constant_teacher(tmp_path / "t", "fear", size=32)
    real_augment, real_ensemble = train.augment, train.ensemble_logits

    def run(name, *extra):
        seen = {"student": [], "whole": [], "teacher": []}

        def augment(*a, **k):
            out = real_augment(*a, **k)
            seen["student"].append(out[0].clone())
            seen["whole"].append(out[1].clone())
            return out

        def ensemble(teachers, x):
            seen["teacher"].append(x.clone())
            return real_ensemble(teachers, x)

        monkeypatch.setattr(train, "augment", augment)
        monkeypatch.setattr(train, "ensemble_logits", ensemble)
        train.main([*tiny_run(root), "--teacher", str(teacher), "--erase-mouth", "1", *extra,
                    "--run-dir", str(tmp_path / name)])
        assert len(seen["teacher"]) == len(seen["student"]) == 3  # 14 faces: three whole batches of 4
        return seen, (tmp_path / name / "best" / "README.md").read_text()

    low = slice(35, None)  # rows from 72% of 48 down
    whole, card = run("whole", "--kd-whole-face")
    for student, shown, face in zip(whole["student"], whole["teacher"], whole["whole"]):
        assert (student[:, :, low] == 0).all()  # the student never sees a mouth
        assert (shown[:, :, low] != 0).any(-1).any(-1).all()  # every face the teacher sees has one
        assert torch.equal(shown, face) and torch.equal(shown[:, :, :28], student[:, :, :28])  # same face above
    assert "on the same augmented faces (shown whole to the teacher where the student's had the mouth and chin " \
           "blanked)." in card
    blanked, card = run("blanked")
    assert all(torch.equal(shown, student) for shown, student in zip(blanked["teacher"], blanked["student"]))
    assert "on the same augmented faces." in card

    with pytest.raises(SystemExit, match="--kd-whole-face shows the teachers"):
        train.main([*tiny_run(root), "--teacher", str(teacher), "--kd-whole-face", "--run-dir", str(tmp_path / "no")])
