"""Every data-set layout: labels arrive as the right classes, a short real training run, an evaluation."""
import json
import shutil

import pytest
import torch

from emotion.model import CLASSES, load_model
from tests import fixtures as fx
from train import data as D
from train import evaluate, train

LAYOUTS = {
    # name: (maker, --dataset, train split, evaluation split)
    "fer2013_folders": (fx.make_fer2013_folders, "fer2013", "train", "private_test"),
    "fer2013_csv": (fx.make_fer2013_csv, "fer2013", "train", "public_test"),
    "rafdb_basic": (fx.make_rafdb_basic, "rafdb", "train", "test"),
    "rafdb_kaggle": (fx.make_rafdb_kaggle, "rafdb", "train", "test"),
    "class_folders": (fx.make_class_folders, "folder", None, None),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_labels_are_the_right_classes(tmp_path, layout):
    maker, dataset, train_split, eval_split = LAYOUTS[layout]
    root = maker(tmp_path / layout)
    for split in {train_split, eval_split}:
        s = D.load_split(dataset, root, split, size=32)
        assert len(s) > 0 and s.images.dtype == torch.uint8 and s.images.shape[1:] == (1, 32, 32)
        # the grey level written into each picture says which class it was generated for
        levels = s.images.float().mean((1, 2, 3))
        expected = torch.tensor([fx.grey_level(int(c)) for c in s.labels], dtype=torch.float)
        assert torch.all((levels - expected).abs() < 8), f"{layout}/{split}: labels do not match pictures"
        assert set(s.labels.tolist()) == set(range(len(CLASSES)))


def test_fer2013_splits_are_disjoint(tmp_path):
    root = fx.make_fer2013_folders(tmp_path / "fer")
    public = D.list_split("fer2013", root, "public_test")
    private = D.list_split("fer2013", root, "private_test")
    assert len(public) == len(private) == 2 * len(CLASSES)
    assert not {str(p) for p, _ in public} & {str(p) for p, _ in private}
    assert all("PublicTest_" in str(p) for p, _ in public)


def test_rafdb_numbers_map_to_names():
    # RAF-DB: 1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral
    assert [D.RAFDB_LABELS[i] for i in range(1, 8)] == ["surprise", "fear", "disgust", "happy", "sad", "angry",
                                                          "neutral"]
    assert D.class_index("Happiness") == CLASSES.index("happy") and D.class_index("contempt") is None


def test_bad_data_paths_say_what_is_wrong(tmp_path):
    with pytest.raises(D.DatasetError, match="not found"):
        D.list_split("fer2013", tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DatasetError):
        D.list_split("rafdb", tmp_path / "empty", "train")
    with pytest.raises(D.DatasetError, match="split"):
        D.list_split("fer2013", tmp_path / "empty", "validation")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_then_evaluate(tmp_path, layout):
    maker, dataset, train_split, eval_split = LAYOUTS[layout]
    root = maker(tmp_path / layout, per_class=4)
    out, run = tmp_path / "model", tmp_path / "run"
    args = ["--dataset", dataset, "--data", str(root), "--out", str(out), "--run-dir", str(run), "--size", "32",
            "--epochs", "2", "--batch-size", "8", "--threads", "2", "--no-progress"]
    if train_split:
        args += ["--train-split", train_split]
    best = train.main(args)
    assert 0 <= best["accuracy"] <= 1 and best["epoch"] in (1, 2)
    # the folder is a timm Hub model that the app can load
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= files
    assert not files & {"pytorch_model.bin", "model.pt"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "resnet50" and cfg["num_classes"] == 7 and cfg["label_names"] == list(CLASSES)
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    m = load_model(out, fallback=False)
    assert m.prep.size == 32 and m.labels == CLASSES

    if dataset == "folder":  # no validation split in this layout, none named: 10% of train held out
        assert json.loads((out / "results.json").read_text())["training"]["val_split"] == "10% held out of train"

    ev = tmp_path / "eval"
    eval_args = ["--weights", str(out), "--data", str(root), "--dataset", dataset, "--out", str(ev),
                 "--no-progress", "--card"]
    if eval_split:
        eval_args += ["--split", eval_split]
    metrics = evaluate.main(eval_args)
    saved = json.loads((ev / "metrics.json").read_text())
    for key in ("accuracy", "mean_class_accuracy", "per_class_accuracy", "confusion_matrix", "n"):
        assert key in saved
    assert saved["n"] == metrics["n"] == sum(map(sum, saved["confusion_matrix"])) > 0
    assert set(saved["per_class_accuracy"]) == set(CLASSES)
    correct = sum(saved["confusion_matrix"][i][i] for i in range(7))
    assert saved["accuracy"] == pytest.approx(correct / saved["n"])
    assert (ev / "confusion_matrix.png").stat().st_size > 1000
    card = (out / "README.md").read_text()
    assert "## Results" in card
    # the card shows the matrix beside it; a class-folder set's row goes by the folder's name
    picture = f"confusion_matrix_{root.name if dataset == 'folder' else dataset + '_' + metrics['split']}.png"
    assert f"| {root.name if dataset == 'folder' else dataset + ' ' + metrics['split']} | {metrics['n']} |" in card
    assert (out / picture).read_bytes() == (ev / "confusion_matrix.png").read_bytes() and f"]({picture})" in card


def test_class_weights_keep_mean_one_and_favour_rare_classes():
    counts = [100, 10, 100, 400, 100, 100, 100]
    w = train.class_weights(counts, "sqrt")
    assert (w * torch.tensor(counts, dtype=torch.float)).sum() / sum(counts) == pytest.approx(1.0)
    assert w[1] > w[0] > w[3]


def _faces_and_votes(n: int = 6):
    """n (even, at most 7) flat pictures, picture i all of value i + 1, and each one's target: class i."""
    x = torch.arange(1, n + 1, dtype=torch.float).view(n, 1, 1, 1).expand(n, 1, 16, 16).contiguous()
    return x, torch.nn.functional.one_hot(torch.arange(n), 7).float()


def test_mixup_blends_each_face_with_its_partner_and_their_targets_alike():
    import numpy as np

    from train.augment import mix, mixer

    assert mixer(0.0, 0.0, 1.0, 7) is None
    x, t = _faces_and_votes()
    before = np.random.get_state()[1].copy()
    mixed, target = mix(mixer(0.4, 0.0, 1.0, 7), x.clone(), t, seed=3)
    assert (np.random.get_state()[1] == before).all()  # numpy's own generator is left as it was
    lam = (mixed[0, 0, 0, 0] - 6) / (1 - 6)  # picture 0 (value 1) with its partner, the last one (value 6)
    assert 0 < lam < 1
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0))
    assert torch.allclose(target, lam * t + (1 - lam) * t.flip(0))
    again, _ = mix(mixer(0.4, 0.0, 1.0, 7), x.clone(), t, seed=3)
    other, _ = mix(mixer(0.4, 0.0, 1.0, 7), x.clone(), t, seed=4)
    assert torch.equal(again, mixed) and not torch.equal(other, mixed)


def test_cutmix_pastes_a_box_of_the_partner_and_its_target_share_is_the_box_area():
    from train.augment import mix, mixer

    x, t = _faces_and_votes()
    shares = []
    for seed in range(5):
        mixed, target = mix(mixer(0.0, 1.0, 1.0, 7), x.clone(), t, seed=seed)
        for i in range(len(x)):
            own, partner = i + 1, len(x) - i
            pasted = (mixed[i] == partner).float().mean()
            assert ((mixed[i] == own) | (mixed[i] == partner)).all()
            assert target[i, i] == pytest.approx(1 - pasted.item())  # its own class keeps what is left
            assert target[i, len(x) - 1 - i] == pytest.approx(pasted.item())
        shares.append(pasted.item())
    assert len({round(s, 4) for s in shares if 0 < s < 1}) >= 3  # boxes of several sizes (one may fall outside)


def test_mixing_needs_an_even_batch(tmp_path):
    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=2)
    with pytest.raises(SystemExit, match="even --batch-size"):
        train.main(["--dataset", "fer2013", "--data", str(root), "--train-split", "train", "--size", "32",
                    "--batch-size", "7", "--epochs", "1", "--cutmix", "1.0", "--run-dir", str(tmp_path / "r"),
                    "--no-progress"])


def test_no_answer_counts_as_wrong_everywhere():
    """A face not found or a file not read (-1) is a wrong answer in every figure, and in the matrix."""
    from train.metrics import scores

    m = scores([0, 0, 0, 0, 1, 1], [0, -1, -1, -1, 1, 1])
    assert m["accuracy"] == 0.5
    assert m["accuracy_ci95"] == pytest.approx([0.1876, 0.8124], abs=1e-3)  # Wilson's interval of 3 in 6
    assert m["per_class_accuracy"]["angry"] == 0.25 and m["per_class_accuracy"]["disgust"] == 1.0
    assert m["mean_class_accuracy"] == pytest.approx((0.25 + 1.0) / 2)
    assert m["confusion_columns"][-1] == "no answer" and len(m["confusion_matrix"][0]) == len(CLASSES) + 1
    assert m["confusion_matrix"][0] == [1, 0, 0, 0, 0, 0, 0, 3] and sum(map(sum, m["confusion_matrix"])) == 6
    with pytest.raises(ValueError, match="class indices"):
        scores([0], [7])


def test_stop_after_one_epoch_resume_and_evaluate_alike(tmp_path):
    """A run stopped by its time limit after epoch 1 leaves --out alone; resumed, it trains epoch 2 and only
    then writes --out; the validation accuracy logged in training is train.evaluate's on the same split."""
    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=4)
    out, run = tmp_path / "model", tmp_path / "run"
    first = train.main(["--dataset", "fer2013", "--data", str(root), "--train-split", "train", "--out", str(out),
                        "--run-dir", str(run), "--size", "32", "--epochs", "2", "--batch-size", "8", "--threads", "2",
                        "--no-progress", "--time-limit", "0.001"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1] and first["epoch"] == 1
    assert (run / "best" / "model.safetensors").is_file()
    assert not out.exists()  # an unfinished schedule never replaces a model folder

    best = train.main(["--resume", str(run / "last.pt"), "--no-progress"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2]
    assert (out / "model.safetensors").read_bytes() == (run / "best" / "model.safetensors").read_bytes()

    m = evaluate.main(["--weights", str(out), "--data", str(root), "--dataset", "fer2013", "--split", "public_test",
                       "--out", str(tmp_path / "eval"), "--no-progress"])
    assert m["n"] == 2 * len(CLASSES)
    assert m["confusion_matrix"] == best["confusion_matrix"] and m["accuracy"] == best["accuracy"]
    assert log[best["epoch"] - 1]["val_accuracy"] == round(m["accuracy"], 4)


def test_a_validation_split_that_does_not_exist_is_refused(tmp_path):
    common = ["--size", "32", "--epochs", "1", "--batch-size", "8", "--threads", "2", "--no-progress"]
    fer = fx.make_fer2013_folders(tmp_path / "fer")
    with pytest.raises(D.DatasetError, match="split"):
        train.main(["--dataset", "fer2013", "--data", str(fer), "--val-split", "publictest",
                    "--run-dir", str(tmp_path / "run1"), *common])
    faces = fx.make_class_folders(tmp_path / "faces")
    with pytest.raises(D.DatasetError):  # named, so it must exist: no silent 10% hold-out
        train.main(["--dataset", "folder", "--data", str(faces), "--val-split", "val",
                    "--run-dir", str(tmp_path / "run2"), *common])
    assert not (tmp_path / "run1" / "log.jsonl").exists() and not (tmp_path / "run2" / "log.jsonl").exists()


def test_validation_pictures_are_read_as_the_app_reads_faces(tmp_path):
    """Training picks its epoch on the validation split: read there as train.evaluate and the app read faces
    (larger pictures first brought down to the training pictures' side), the figures are the same."""
    import numpy as np

    from emotion.images import load_image
    from emotion.model import face_pixels

    root = tmp_path / "faces"
    for c, name in enumerate(CLASSES):
        for split, side, n in (("train", 48, 4), ("val", 96, 2)):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                fx.class_image(c, size=side, seed=i).save(d / f"{i}.png")
    args = train.parse_args(["--dataset", "folder", "--data", str(root), "--train-split", "train", "--val-split", "val",
                             "--size", "32"])
    _, val, _, native = train.load_data(args)
    assert native == 48 and len(val) == 2 * len(CLASSES)
    for img, source in zip(val.images, val.sources):  # what analyse(whole_image=True) gives the model
        assert np.array_equal(img[0].numpy(), face_pixels(load_image(source).rgb, 32, True, 48))

    run = tmp_path / "run"
    best = train.main(["--dataset", "folder", "--data", str(root), "--train-split", "train", "--val-split", "val",
                       "--run-dir", str(run), "--size", "32", "--epochs", "1", "--batch-size", "8", "--threads", "2",
                       "--no-progress"])
    m = evaluate.main(["--weights", str(run / "best"), "--data", str(root), "--dataset", "folder", "--split", "val",
                       "--out", str(tmp_path / "eval"), "--no-progress"])
    assert m["confusion_matrix"] == best["confusion_matrix"]


@pytest.mark.parametrize("warmup", ["1", "0.5"])
def test_fit_schedule_shortens_the_run_to_the_time_and_a_resume_ends_there(tmp_path, warmup):
    """--fit-schedule: with too little time for the epochs asked, the schedule is cut to what fits (never
    below two epochs) while it is still warming up, or after the first epoch for a warm-up shorter than one, so
    the cosine ends on time; the checkpoint keeps it."""
    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=4)
    out, run = tmp_path / "model", tmp_path / "run"
    train.main(["--dataset", "fer2013", "--data", str(root), "--train-split", "train", "--out", str(out),
                "--run-dir", str(run), "--size", "32", "--epochs", "50", "--batch-size", "8", "--threads", "2",
                "--warmup-epochs", warmup, "--no-progress", "--time-limit", "0.0001", "--fit-schedule"])
    assert torch.load(run / "last.pt", weights_only=True)["args"]["epochs"] == 2
    train.main(["--resume", str(run / "last.pt"), "--no-progress"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2]  # not 50
    assert (out / "model.safetensors").is_file()  # the fitted schedule finished
    recipe = json.loads((out / "results.json").read_text())["training"]["recipe"]
    assert recipe["epochs"] == 2


def test_init_starts_from_a_model_folder_matching_classes_by_name(tmp_path):
    """--init loads a model's weights (classifier rows matched to our classes by name, whatever order its
    label_names has) and keeps its normalisation; with a learning rate of ~0 they come out unchanged."""
    from safetensors.torch import load_file, save_file

    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=4)
    common = ["--dataset", "fer2013", "--data", str(root), "--train-split", "train", "--size", "32",
              "--epochs", "1", "--batch-size", "8", "--threads", "2", "--no-progress"]
    train.main([*common, "--run-dir", str(tmp_path / "a")])
    a = tmp_path / "a" / "best"
    # the same model with its classes listed backwards: the classifier's rows reversed to match
    b = tmp_path / "b"
    b.mkdir()
    w = load_file(a / "model.safetensors")
    w["fc.weight"], w["fc.bias"] = w["fc.weight"].flip(0).contiguous(), w["fc.bias"].flip(0).contiguous()
    save_file(w, b / "model.safetensors")
    cfg = json.loads((a / "config.json").read_text())
    cfg["label_names"] = cfg["label_names"][::-1]
    cfg["pretrained_cfg"]["mean"], cfg["pretrained_cfg"]["std"] = [0.3] * 3, [0.2] * 3
    (b / "config.json").write_text(json.dumps(cfg))
    (b / "results.json").write_text((a / "results.json").read_text())  # how b was made: a's training

    train.main([*common, "--run-dir", str(tmp_path / "c"), "--init", str(b), "--lr", "1e-12"])
    c = tmp_path / "c" / "best"
    wa, wc = load_file(a / "model.safetensors"), load_file(c / "model.safetensors")
    for name in ("conv1.weight", "layer3.0.conv2.weight", "fc.weight", "fc.bias"):
        assert torch.allclose(wa[name], wc[name], atol=1e-6), name
    m = load_model(c, fallback=False)
    assert m.labels == CLASSES and m.prep.mean == (0.3,) * 3 and m.prep.std == (0.2,) * 3
    facts = json.loads((c / "results.json").read_text())["training"]
    assert facts["recipe"]["init"] == str(b)
    assert facts["started_from"] == json.loads((b / "results.json").read_text())["training"]
    assert "Before that, the start model: Trained from scratch" in (c / "README.md").read_text()

    with pytest.raises(SystemExit, match="classes"):
        cfg["label_names"][0] = "contempt"
        (b / "config.json").write_text(json.dumps(cfg))
        train.main([*common, "--run-dir", str(tmp_path / "d"), "--init", str(b)])


def test_a_dilated_start_model_stays_dilated_unless_asked_otherwise(tmp_path):
    """--init from a model trained with --output-stride 16 builds the same dilated network (its layer4 a grid of
    input / 16 cells, as config.json's model_args and the recipe say) without the flag being given again, where
    the plain network would take the same weights silently; --output-stride 32 still asks for the plain one."""
    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=4)
    common = ["--dataset", "fer2013", "--data", str(root), "--train-split", "train", "--size", "32",
              "--epochs", "1", "--batch-size", "8", "--threads", "2", "--no-progress"]
    train.main([*common, "--run-dir", str(tmp_path / "dilated"), "--output-stride", "16"])
    start = tmp_path / "dilated" / "best"
    for run, extra, stride in (("again", [], 16), ("plain", ["--output-stride", "32"], 32)):
        train.main([*common, "--run-dir", str(tmp_path / run), "--init", str(start), *extra])
        best = tmp_path / run / "best"
        assert json.loads((best / "config.json").read_text())["model_args"].get("output_stride", 32) == stride
        recipe = json.loads((best / "results.json").read_text())["training"]["recipe"]
        assert recipe.get("output_stride", 32) == stride
        m = load_model(best, fallback=False, engine="torch")
        with torch.no_grad():
            assert m.net.forward_features(torch.zeros(1, 3, 32, 32)).shape[-1] == 32 // stride


def test_a_resume_keeps_the_start_models_normalisation_without_it(tmp_path):
    """A run started with --init keeps the start model's normalisation in its checkpoint: resumed after the
    start model is gone, it finishes with that normalisation and that model's training facts."""
    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=4)
    common = ["--dataset", "fer2013", "--data", str(root), "--train-split", "train", "--size", "32",
              "--batch-size", "8", "--threads", "2", "--no-progress"]
    train.main([*common, "--epochs", "1", "--run-dir", str(tmp_path / "a")])
    start = tmp_path / "start"
    shutil.copytree(tmp_path / "a" / "best", start)
    cfg = json.loads((start / "config.json").read_text())
    cfg["pretrained_cfg"]["mean"], cfg["pretrained_cfg"]["std"] = [0.3] * 3, [0.2] * 3
    (start / "config.json").write_text(json.dumps(cfg))
    started_from = json.loads((start / "results.json").read_text())["training"]

    run, out = tmp_path / "run", tmp_path / "model"
    train.main([*common, "--epochs", "2", "--run-dir", str(run), "--out", str(out), "--init", str(start),
                "--time-limit", "0.0001"])
    assert not out.exists()  # stopped after epoch 1
    shutil.rmtree(start)
    train.main(["--resume", str(run / "last.pt"), "--no-progress"])
    m = load_model(out, fallback=False)
    assert m.prep.mean == (0.3,) * 3 and m.prep.std == (0.2,) * 3
    assert json.loads((out / "results.json").read_text())["training"]["started_from"] == started_from


def test_average_of_a_runs_checkpoints_with_batch_norm_measured_again(tmp_path):
    """train.average: the weights are the mean of the sources'; each BN layer's statistics are those of its
    input over the training pictures; the model folder scores as train.evaluate scores it; the card says so."""
    from safetensors.torch import load_file

    from train import average

    root = fx.make_fer2013_folders(tmp_path / "fer", per_class=4)
    run = tmp_path / "run"
    common = ["--dataset", "fer2013", "--data", str(root), "--train-split", "train", "--size", "32",
              "--batch-size", "8", "--threads", "2", "--no-progress"]
    train.main([*common, "--run-dir", str(run), "--epochs", "2", "--time-limit", "0.0001"])
    shutil.copy(run / "last.pt", run / "epoch1.pt")
    train.main(["--resume", str(run / "last.pt"), "--no-progress"])
    # a model folder with the run's normalisation (as --init's start model has), other weights (another seed)
    train.main([*common, "--run-dir", str(tmp_path / "b"), "--epochs", "1", "--seed", "1"])
    start = tmp_path / "b" / "best"

    out = tmp_path / "swa"
    m = average.main([str(run / "epoch1.pt"), str(run / "last.pt"), str(start), "--out", str(out),
                      "--threads", "2", "--no-progress"])
    states = [torch.load(run / f, weights_only=True)["model"] for f in ("epoch1.pt", "last.pt")]
    states.append({k: v.float() for k, v in load_file(start / "model.safetensors").items()})
    w = load_file(out / "model.safetensors")
    for name in ("conv1.weight", "layer4.2.conv3.weight", "fc.weight"):
        mean = sum(s[name].float() for s in states) / 3
        assert torch.allclose(w[name].float(), mean, atol=2e-3), name

    model = load_model(out, fallback=False)
    _, _, _, native = train.load_data(train.parse_args(common))
    pictures = D.load_split("fer2013", root, "train", 32, native_size=native).images
    x = ((pictures.float() / 255 - model.prep.mean[0]) / model.prep.std[0]).expand(-1, 3, -1, -1)
    with torch.no_grad():
        first = model.net.conv1(x)  # what the first BN layer sees
    assert torch.allclose(model.net.bn1.running_mean, first.mean((0, 2, 3)), atol=2e-3)
    assert torch.allclose(model.net.bn1.running_var, first.var((0, 2, 3)), rtol=2e-2)

    e = evaluate.main(["--weights", str(out), "--data", str(root), "--dataset", "fer2013", "--split", "public_test",
                       "--out", str(tmp_path / "eval"), "--no-progress"])
    assert e["confusion_matrix"] == m["confusion_matrix"]
    card = (out / "README.md").read_text()
    assert "The average of the weights of 3 models" in card and "epochs 1, 2 of the run below" in card
    assert "The run: Trained from scratch" in card

    other = tmp_path / "other"
    shutil.copytree(start, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["pretrained_cfg"]["mean"] = [0.3] * 3
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit, match="normalisation"):
        average.main([str(run / "last.pt"), str(other), "--out", str(tmp_path / "no")])


def test_erase_mouth_blanks_the_lower_face_of_the_share_asked():
    """With every other change off, a flat face keeps its upper 60% and, where asked, loses the rows from
    60-72% of the height down (set to the mean, 0 once normalised)."""
    from train.augment import augment

    x = torch.full((64, 1, 50, 50), 230, dtype=torch.uint8)
    still = dict(rotate=0.0, scale=(1.0, 1.0), shift=0.0, jitter=0.0, erase_p=0.0, quality_p=0.0, yaw=0.0,
                 squeeze=0.0)
    out = augment(x, (0.5,) * 3, (0.25,) * 3, mouth_p=0.5, generator=torch.Generator().manual_seed(0), **still)
    assert (out[:, :, :30] != 0).all()  # brows and eyes untouched
    blanked = (out[:, 0, 36:] == 0).all(-1).all(-1)  # from 72% down: blank or not, whole rows
    kept = (out[:, 0, 36:] != 0).all(-1).all(-1)
    assert (blanked | kept).all() and 16 <= int(blanked.sum()) <= 48  # about half of the 64
    assert not (augment(x, (0.5,) * 3, (0.25,) * 3, generator=torch.Generator().manual_seed(0), **still) == 0).any()


def test_sharpen_overshoots_edges_of_the_share_asked_and_leaves_every_other_draw_alone():
    """A face of two flat halves (dark, bright) has no value outside its two levels; the unsharp mask adds an
    overshoot on both sides of the edge and leaves the flat parts as they were. Drawn after the erasing, it
    keeps the erased boxes (and every other change) where they fall without it."""
    from train.augment import augment

    x = torch.full((64, 1, 50, 50), 60, dtype=torch.uint8)
    x[..., 25:] = 190
    still = dict(rotate=0.0, scale=(1.0, 1.0), shift=0.0, jitter=0.0, erase_p=0.5, quality_p=0.0, yaw=0.0,
                 squeeze=0.0)

    def run(p):
        return augment(x, (0.5,) * 3, (0.25,) * 3, sharpen_p=p, generator=torch.Generator().manual_seed(0), **still)

    plain, sharp, half = run(0.0), run(1.0), run(0.5)
    erased = plain == 0
    assert erased.any() and (sharp[erased] == 0).all() and (half[erased] == 0).all()  # same boxes
    keep = ~erased
    flat = torch.zeros_like(keep)
    flat[..., :18] = flat[..., 32:] = True  # beyond the 5-tap blur's reach of the edge (columns 24-25)
    assert torch.allclose(sharp[keep & flat], plain[keep & flat], atol=1e-5)
    clear = keep[:, 0, :, 20:30].all(-1)
    assert clear.any(-1).all()
    row = clear.float().argmax(-1)  # one row per face that no box touches there
    across = torch.stack([sharp[i, 0, row[i]] for i in range(64)])
    levels = torch.stack([plain[i, 0, row[i]] for i in range(64)])
    assert (across.max(-1).values > levels.max(-1).values + 1e-3).all()  # overshoot above the bright half
    assert (across.min(-1).values < levels.min(-1).values - 1e-3).all()  # and below the dark one
    changed = ~torch.isclose(half, plain, atol=1e-5).flatten(1).all(1)
    assert 16 <= int(changed.sum()) <= 48  # about half of the 64
