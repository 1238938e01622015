"""The faithfulness verdict on models whose true explanation is known by construction, its controls, and
the API fields and region baseline the app reads."""
import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from emotion import faithfulness as F
from emotion import regions as R
from emotion import service
from emotion.model import CLASSES, DEFAULT_WEIGHTS, FACE_PRIOR_FILE, EmotionModel, Preprocess
from tests import fixtures as fx

S = 32
P0 = (slice(4, 12), slice(4, 12))  # the region class 0's logit reads (top left)
P1 = (slice(20, 28), slice(20, 28))  # the region class 1's logit reads (bottom right)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class RegionNet(torch.nn.Module):
    """Class 0's logit is 4 x (mean over P0 of relu(channel 0) - 1), class 1's the same over P1 of channel 1,
    class 2's is constant; the rest 0. `features` (ReLU of the input) is the layer Grad-CAM reads; `noise`
    reads channel 2 only, so the random control maps drawn from it know nothing of P0 or P1."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1, bias=False), torch.nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.copy_(torch.eye(3)[:, :, None, None])  # each channel passed through
        self.noise = torch.nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x):
        self.noise(x[:, 2:])
        a = self.features(x)
        z0 = 4 * (a[:, 0, P0[0], P0[1]].mean((1, 2)) - 1)
        z1 = 4 * (a[:, 1, P1[0], P1[1]].mean((1, 2)) - 1)
        rest = torch.zeros(len(x), len(CLASSES) - 2)
        rest[:, 0] = 1.5  # class 2: constant, no pixel moves it
        return torch.cat([z0[:, None], z1[:, None], rest], 1)


def region(p) -> np.ndarray:
    m = np.zeros((S, S), np.float32)
    m[p] = 1
    return m


@pytest.fixture(scope="module")
def setup():
    model = EmotionModel(net=RegionNet().eval(), labels=CLASSES, prep=Preprocess(size=S), source="synthetic")
    x = torch.randn(1, 3, S, S, generator=torch.Generator().manual_seed(0)) * 0.3
    x[:, 0][:, P0[0], P0[1]] = 2.0
    x[:, 1][:, P1[0], P1[1]] = 2.0
    return model, x


def gradcam_map(model, x, c):
    """pytorch-grad-cam's own Grad-CAM of class `c` at `features`."""
    with GradCAM(model.net, [model.net.features]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(c)])[0]


def test_the_true_explanation_is_good_and_maps_without_its_evidence_are_not(setup):
    model, x = setup
    net = model.net
    blob = np.zeros((S, S), np.float32)
    blob[13:22, 11:20] = 1  # a fixed blob in the middle of the picture, the same for any face
    grad0 = gradcam_map(model, x, 0)
    assert grad0[P0].mean() > 0.8 and np.delete(grad0.ravel(), np.flatnonzero(region(P0))).mean() < 0.3
    maps = {"truth": region(P0), "gradcam": grad0, "blob": blob, "inverted": 1 - region(P0),
            "other_region": region(P1), "empty": np.zeros((S, S), np.float32)}
    res = F.faithfulness_many(model, x, maps, "angry", prior=F.centre_prior(S), other=("disgust", gradcam_map(model, x, 1)),
                              layer=net.noise)
    levels = {k: v["level"] for k, v in res.items()}
    assert levels["truth"] == "good" and levels["gradcam"] == "good", res["truth"]
    for name in ("blob", "inverted", "other_region"):
        assert levels[name] != "good", (name, res[name])
    assert levels["empty"] == "empty" and res["empty"]["score"] is None
    assert res["empty"]["verdict"].startswith("No evidence for angry")
    # the quantity is the logit: the truth's curve drops it from 4 to what the filled-in patch leaves (P0 is
    # filled from its surroundings, noise around 0: z0 falls to about -4); all of P0 is in the top 10 %, so
    # the curve is flat after it but for how the fill draws on the more pixels deleted around P0
    truth = res["truth"]
    assert truth["quantity"] == "logit" and truth["base_logit"] == pytest.approx(4.0, abs=1e-4)
    assert 6.5 < truth["curve"][0] < 9 and truth["curve"][0] == pytest.approx(truth["curve"][-1], abs=0.2)
    assert truth["score"] == pytest.approx(F.curve_area(np.array(truth["curve"]))[0])
    assert truth["beats"] == {"face_prior": True, "other_class": True} and truth["other_class"] == "disgust"
    # the inverted map deletes nothing of P0 within half the pixels: the logit stays
    assert max(abs(d) for d in res["inverted"]["curve"]) < 0.05
    # the other region's map is the other class's map: judged no better than that control
    assert res["other_region"]["beats"]["other_class"] is False


def test_a_fixed_blob_no_better_than_the_face_prior_or_a_class_blind_map_is_not_good(setup):
    """Random maps are easy to beat; the face prior and the other class's map are the controls that matter."""
    model, x = setup
    big = np.zeros((S, S), np.float32)
    big[:20, :20] = 1  # the corner holding P0: where explanations look on average in this world
    res = F.faithfulness_many(model, x, {"blob": big, "truth": region(P0)}, 0, prior=big,
                              other=("disgust", region(P1)), layer=model.net.noise)
    blob, truth = res["blob"], res["truth"]
    assert blob["beats_random"] == blob["n_random"]  # it beats every random map...
    assert blob["level"] == "weak" and "not the map an average face gets" in blob["verdict"]  # ...not the prior
    assert truth["score"] > blob["score"]  # the truth is still the better map, though not twice as good here
    # a map another class gets just the same: no evidence of *this* class
    blind = F.faithfulness(model, x, region(P0), 0, prior=F.centre_prior(S), other=("disgust", region(P0)),
                           layer=model.net.noise)
    assert blind["level"] == "weak" and blind["beats"] == {"face_prior": True, "other_class": False}
    assert "the map for disgust" in blind["verdict"]


def test_curve_area_by_hand():
    # drops 1, 2, 2 at 10, 25, 50 %: trapezoids 0.05 + 0.225 + 0.5 over 0.5
    assert F.curve_area(np.array([1.0, 2.0, 2.0]), (0.1, 0.25, 0.5))[0] == pytest.approx(1.55)


def test_a_class_no_pixel_moves_is_untestable_and_a_flat_map_is_empty(setup):
    model, x = setup
    r = F.faithfulness(model, x, region(P0), 2, layer=model.net.noise)
    assert r["level"] == "untestable" and "can't be checked" in r["verdict"]
    assert F.faithfulness(model, x, np.full((S, S), 0.7, np.float32), 0, layer=model.net.noise)["level"] == "empty"


def test_controls_are_drawn_per_input_and_repeat_for_the_same_input(setup):
    model, x = setup
    a = F.faithfulness(model, x, region(P0), 0, layer=model.net.noise)
    again = F.faithfulness(model, x.clone(), region(P0), 0, layer=model.net.noise)
    assert a["seed"] == again["seed"] and a["random_scores"] == again["random_scores"]
    assert {k: v for k, v in a.items() if k != "ms"} == {k: v for k, v in again.items() if k != "ms"}
    y = x.clone()
    y[0, 2, 0, 0] += 0.5  # another input (one pixel of the channel the random maps read)
    b = F.faithfulness(model, y, region(P0), 0, layer=model.net.noise)
    assert b["seed"] != a["seed"] and b["random_scores"] != a["random_scores"]
    assert F.faithfulness(model, x, region(P0), 1, layer=model.net.noise)["seed"] != a["seed"]  # per class too


def test_judge_needs_every_control_beaten_by_the_margin():
    ctl = {"face_prior": 1.0, "other_class": 0.5}
    assert F.judge(1.0 + F.MARGIN + 0.01, ctl, [0.2, 0.3])[0] == "good"
    assert F.judge(1.0 + F.MARGIN - 0.01, ctl, [0.2, 0.3])[0] == "weak"  # beats the prior, not by the margin
    level, verdict = F.judge(1.5, ctl, [0.2, 0.3], "happy", "sad")  # twice the other class, not the prior
    assert level == "weak" and "not the map an average face gets" in verdict and "the map for sad" not in verdict
    assert F.judge(0.25, ctl, [0.2, 0.3])[0] == "chance"
    # a class-agnostic map can at best be "weak", and says why
    level, verdict = F.judge(5.0, {"face_prior": 1.0}, [0.2, 0.3], class_agnostic=True)
    assert level == "weak" and "same map for every class" in verdict


def test_face_prior_comes_from_the_models_own_folder_per_class(tmp_path):
    happy, source = F.face_prior(DEFAULT_WEIGHTS, "Grad-CAM", "layer3", 64, "happy")
    overall, source_all = F.face_prior(DEFAULT_WEIGHTS, "Grad-CAM", "layer3", 64)
    assert source == "mean happy map over FER2013 training faces" and source_all.startswith("mean map")
    assert happy.shape == (64, 64) and not np.allclose(happy, overall)
    assert F.face_prior(DEFAULT_WEIGHTS, "Grad-CAM", torch.nn.ReLU(), 32)[1] == "centre prior"  # a bare module
    # another model's folder: its own maps, read again when the file is rebuilt; none there: the centre prior
    assert F.face_prior(tmp_path, "Grad-CAM", "layer3", 64, "happy")[1] == "centre prior"
    stripe = np.zeros((16, 16), np.float16)
    stripe[12:14] = 1  # a mean map that lies on the mouth only
    np.savez_compressed(tmp_path / FACE_PRIOR_FILE, **{"Grad-CAM|layer3|happy": stripe})
    mine, source = F.face_prior(tmp_path, "Grad-CAM", "layer3", 16, "happy")
    assert source.startswith("mean happy map") and np.array_equal(mine, stripe.astype(np.float32))
    np.savez_compressed(tmp_path / FACE_PRIOR_FILE, **{"Grad-CAM|layer3|happy": stripe.T.copy()})
    assert np.array_equal(F.face_prior(tmp_path, "Grad-CAM", "layer3", 16, "happy")[0], stripe.T)
    # the centre prior peaks at the template face's centre
    c = F.centre_prior(64)
    iy, ix = np.unravel_index(np.argmax(c), c.shape)
    cx, cy = np.mean(R.TEMPLATE_LANDMARKS, 0) * 64
    assert abs(ix + 0.5 - cx) <= 1 and abs(iy + 0.5 - cy) <= 1


def test_service_names_its_controls_baseline_and_refuses_why_not_for_eigen_cam(model):
    out = service.predict(model, fx.PORTRAIT, "Eigen-CAM")
    face = out["faces"][0]
    f = face["faithfulness"]
    assert f["class_agnostic"] is True and f["other_class"] is None and "other_class" not in f["controls"]
    assert f["level"] != "good"
    assert face["region_baseline"] == pytest.approx(R.face_region_shares(
        _face(model), 1.0, np.ones((32, 32), np.float32)), abs=0.05)
    wrong = next(c for c in CLASSES if c != face["label"])
    for asked in (wrong, face["label"].upper()):  # any class named, in any spelling of the method
        with pytest.raises(ValueError, match="same map for every class"):
            service.predict(model, fx.PORTRAIT, "eigen-cam", explain_for=asked)
    assert service.predict(model, fx.PORTRAIT, "Eigen-CAM", explain_for="Predicted Class")["faces"]
    g = service.predict(model, fx.PORTRAIT, "Grad-CAM")["faces"][0]["faithfulness"]
    assert g["class_agnostic"] is False and g["other_class"] != face["label"]
    assert set(g["controls"]) == {"face_prior", "other_class", "random"} and g["quantity"] == "logit"
    # judged at the margin the shipped model calibrated for Grad-CAM at the default layer, which the answer names
    from emotion.explain import DEFAULT_LAYER

    stored = np.load(DEFAULT_WEIGHTS / FACE_PRIOR_FILE)[F.calibration_key("Grad-CAM", DEFAULT_LAYER)]
    assert g["margin"] == float(stored[0]) and (g["calibration"]["k"], g["calibration"]["n"]) == (stored[1], stored[2])


def _face(model):
    from emotion.pipeline import analyse

    return analyse(fx.PORTRAIT, model).faces[0]


def _result(level, score, prior=1.0, other=0.5, rand=0.2):
    return {"level": level, "score": score, "lead": None if score is None else score - max(prior, other),
            "controls": {"face_prior": prior, "other_class": other, "random": rand}, "random_scores": [rand, rand],
            "class_agnostic": False, "beats_random": 2, "n_random": 2, "ms": 1.0}


def test_audit_figures_and_false_good_rate_by_hand():
    from train import audit

    rows = [{"map": _result("good", 3.0), "inverted": _result("chance", 0.1), "shuffled": _result("good", 2.5)},
            {"map": _result("weak", 1.0, prior=2.0), "inverted": _result("good", 4.0)},
            {"map": _result("empty", None), "inverted": _result("chance", 0.0), "shuffled": _result("weak", 1.2)},
            {"map": _result("chance", 0.1), "inverted": _result("chance", 0.0), "shuffled": _result("chance", 0.0)}]
    f = audit.faithfulness_figures(rows)
    assert f["n"] == 4 and f["mean_score"] == pytest.approx((3.0 + 1.0 + 0.1) / 3)  # the empty map has no score
    assert f["controls"] == pytest.approx({"face_prior": (1 + 2 + 1) / 3, "other_class": 0.5, "random": 0.2})
    assert (f["share_good"], f["share_weak"], f["share_chance"], f["share_empty"]) == (0.25, 0.25, 0.25, 0.25)
    assert f["false_good"] == pytest.approx({"shuffled": 1 / 3, "inverted": 1 / 4})
    assert f["false_good_rate"] == pytest.approx(1 / 3)  # the worse of the two
    assert (f["false_good_k"], f["false_good_n"]) == (1, 3)
    # the 95% Wilson intervals of 1 in 3 and of 1 good map in 4, by the formula
    for (k, n), ci in (((1, 3), f["false_good_ci95"]), ((1, 4), f["share_good_ci95"])):
        p, z = k / n, 1.959964
        centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        assert ci == pytest.approx([centre - half, centre + half], abs=1e-5)
    ok = {**f, "false_good_rate": 0.02, "false_good_ci95": [0.005, 0.045]}
    by_layer = {"layer3": {"Grad-CAM": ok, "Eigen-CAM": {**ok, "share_good": 0.9}, "HiResCAM": {**f, "share_good": 0.8}},
                "layer4": {"Grad-CAM": {**ok, "share_good": 0.5}}}
    # class-agnostic Eigen-CAM, and HiResCAM whose uninformative maps pass too often (1 in 3), are passed over
    assert audit.recommend(by_layer)["method"] == "Grad-CAM" and audit.recommend(by_layer)["layer"] == "layer4"
    assert audit.recommend({"layer3": {"HiResCAM": f}}) is None
    # a rate under 5% whose interval reaches above it does not qualify either
    assert audit.recommend({"layer3": {"Grad-CAM": {**ok, "false_good_ci95": [0.01, 0.06]}}}) is None


def test_the_one_pass_gradcam_controls_equal_the_library_path(model):
    """The app's default path makes the other class's map and the random maps in one pass: they must be
    pytorch-grad-cam's own (explain's Grad-CAM, RandomCAM with the same seed), and so must the verdict."""
    from emotion.explain import explain
    from emotion.pipeline import analyse

    face = analyse(fx.PORTRAIT, model).faces[0]
    x = model.prep.to_input([face.crop])
    other = model.labels.index(F.other_class(face.probabilities, face.explained))
    logits, other_map, rand = F.gradcam_controls(model, x, other, 3, seed=7, layer="layer3")
    want_logits, want_map = explain(model, x, [other], "Grad-CAM", "layer3")
    want_rand, want_rand_logits = F.random_maps(model, x, 3, seed=7, layer="layer3")
    assert np.abs(other_map - want_map[0]).max() < 1e-4 and np.abs(rand - want_rand).max() < 1e-4
    assert logits == pytest.approx(want_logits[0].numpy(), abs=1e-4)
    assert logits == pytest.approx(want_rand_logits, abs=1e-4)
    fast = F.face_faithfulness(model, face, "Grad-CAM", "layer3")
    slow = F.faithfulness(model, x, face.heatmap, face.explained, other=(model.labels[other], want_map[0]),
                          prior=F.face_prior(model.source, "Grad-CAM", "layer3", model.prep.size, face.explained)[0], layer="layer3")
    assert fast["level"] == slow["level"] and fast["score"] == pytest.approx(slow["score"], abs=1e-3)
    assert fast["controls"] == pytest.approx(slow["controls"], abs=1e-3)


# ---------------------------------------------------------------- the deletion's perturbation and the margins
def test_deletion_fills_pixels_in_from_the_face_not_with_occlusions_blur():
    """The check deletes with a perturbation no map is made with: a bright square on a flat face is filled in
    with the face's own grey (what inpainting from the surroundings gives), where Occlusion's blur would leave
    the square's light in place; unmasked pixels are left exactly as they were, grey and colour alike."""
    from emotion.occlusion import blurred

    prep = Preprocess(size=32)
    for colour in (False, True):
        px = np.full((32, 32, 3), (100, 60, 140) if colour else (100, 100, 100), np.uint8)
        px[10:20, 12:22] = 220
        x = prep.pixels_input([px])[0]
        mask = torch.zeros(32, 32)
        mask[9:21, 11:23] = 1  # the square and a pixel around it
        out = F.InpaintDeletion(prep.mean, prep.std)(x, mask)
        back = ((out * torch.tensor(prep.std).view(3, 1, 1) + torch.tensor(prep.mean).view(3, 1, 1)) * 255).permute(1, 2, 0)
        assert np.abs(back[10:20, 12:22].numpy() - px[0, 0]).max() <= 3  # the face's own colour, not the square's
        assert torch.equal(out[:, mask == 0], x[:, mask == 0])
        blur = blurred(x)
        assert (blur[:, 15, 17] - x[:, 0, 0]).abs().max() > 0.5  # the blur keeps much of the square's light
    # and the check deletes so: a model whose logit is the square's mean brightness, the map marking the
    # square (100 of 1,024 pixels): deleting it leaves the face's grey
    model = EmotionModel(net=SquareNet().eval(), labels=CLASSES, prep=prep, source="synthetic")
    square = np.zeros((32, 32), np.float32)
    square[10:20, 12:22] = 1
    z = F.deletion_logits(model, x[None], F.rank_map(square, (32, 32))[None], 0, fractions=(100 / 1024,))
    grey = (100 / 255 - prep.mean[0]) / prep.std[0]
    assert z[0, 0] == pytest.approx(grey, abs=3 / 255 / prep.std[0])


class SquareNet(torch.nn.Module):
    """Class 0's logit: the mean of channel 0 over the square px[10:20, 12:22]; the other classes 0."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # (a model has parameters: their dtype is read)

    def forward(self, x):
        z = self.scale * x[:, 0, 10:20, 12:22].mean((1, 2))
        return torch.cat([z[:, None], torch.zeros(len(x), len(CLASSES) - 1)], 1)


def test_the_calibrated_margin_is_the_smallest_whose_interval_ends_within_five_percent():
    # 10 of 300 is 3.3%, but its 95% interval reaches 6.0%; 5 of 300 (1.7%) ends at 3.8%
    assert F.wilson(10, 300)[1] > 0.05 > F.wilson(5, 300)[1]
    counts = {0.0: (40, 300), 0.25: (10, 300), 0.5: (5, 300), 1.0: (1, 300)}
    assert F.choose_margin(counts) == (0.5, 5, 300)
    # with too few faces no rate can be shown to be under 5%: no margin, so never "good"
    assert F.choose_margin({0.0: (0, 40), 3.0: (0, 40)}) == (float("inf"), 0, 40)


def test_margins_come_from_the_models_own_calibration(tmp_path):
    assert F.margin_for(tmp_path, "Grad-CAM", "layer3") == F.MARGIN and F.calibration(tmp_path, "Grad-CAM", "layer3") is None
    np.savez_compressed(tmp_path / FACE_PRIOR_FILE, **{
        "Grad-CAM|layer3": np.ones((16, 16), np.float16),
        F.calibration_key("Grad-CAM", "layer3"): np.array([0.25, 3, 300], np.float32),
        F.calibration_key("Occlusion", "layer2"): np.array([np.inf, 30, 300], np.float32)})
    assert F.margin_for(tmp_path, "Grad-CAM", "layer3") == 0.25
    assert F.margin_for(tmp_path, "Grad-CAM", "layer4") == F.MARGIN  # not calibrated: the one default
    c = F.calibration(tmp_path, "Grad-CAM", "layer3")
    assert (c["margin"], c["k"], c["n"]) == (0.25, 3, 300) and c["ci95"] == pytest.approx(F.wilson(3, 300))
    assert F.margin_for(tmp_path, "Occlusion", "layer2") == float("inf")
    assert F.calibration(tmp_path, "Occlusion", "layer2")["margin"] is None  # (JSON has no infinity)
    ctl = {"face_prior": 1.0, "other_class": 0.5}
    # judged at its margin: 1.3 beats 1.0 by 0.25 of it, and the good verdict gives the calibration's rate
    level, verdict = F.judge(1.3, ctl, [0.2], "happy", "sad", margin=0.25, calibrated=c)
    assert level == "good" and "1.0% of the time (95% interval 0.3% to 2.9%, 300 training faces)" in verdict
    assert F.judge(1.2, ctl, [0.2], margin=0.25)[0] == "weak"
    level, verdict = F.judge(3.0, ctl, [0.2])  # no calibration: the one default margin, and it says so
    assert level == "good" and "(The margin, 1, was not calibrated for this model, method and layer.)" in verdict
    level, verdict = F.judge(50.0, ctl, [0.2], margin=F.margin_for(tmp_path, "Occlusion", "layer2"))
    assert level == "weak" and "cannot be judged good" in verdict


def test_face_prior_command_writes_maps_and_margins_calibrated_on_other_faces(tmp_path):
    """`python -m train.face_prior` on generated FER2013 folders: the mean maps, and a calibration per method
    and layer. With 6 calibration faces no false-"good" rate can be shown to be under 5% (0 of 6 still
    reaches 39%), so no margin is stored as usable: the verdict then never says "good"."""
    from train import face_prior

    data = fx.make_fer2013_folders(tmp_path / "fer", per_class=2)  # 14 training pictures
    pictures = sorted((data / "train").rglob("*.jpg"))
    folder = fx.solved_model(pictures, [CLASSES.index(p.parent.name) for p in pictures], tmp_path / "model")
    face_prior.main(["--weights", str(folder), "--data", str(data), "--n", "8", "--calibration-n", "6",
                     "--methods", "Grad-CAM", "--threads", "1"])
    with np.load(folder / FACE_PRIOR_FILE) as z:
        keys = set(z.files)
        stored = {k: z[k] for k in keys if k.startswith("calibration|")}
    assert {"Grad-CAM|layer3", "Occlusion|layer2"} <= keys  # the mean maps of every method
    assert set(stored) == {F.calibration_key("Grad-CAM", lay) for lay in ("layer2", "layer3", "layer4 (last block)")}
    for v in stored.values():
        assert v[0] == np.inf and v[2] in (5, 6)  # the previous face's map exists from the second face on
    assert F.margin_for(folder, "Grad-CAM", "layer3") == float("inf")
    assert F.margin_for(folder, "Occlusion", "layer2") == F.MARGIN  # not calibrated here
