"""Write a model folder in timm's Hub format, and its model card.

    weights/
      config.json        architecture, num_classes, label_names, pretrained_cfg (+ our `preprocess` block)
      model.safetensors  fp16 tensors (no pickle anywhere)
      results.json       how it was trained and what each evaluation measured
      README.md          the model card, rendered from results.json
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

from emotion.decision import DESCRIPTIONS, Decision
from emotion.framing import MIN_SIDE_PER_BOX_WIDTH
from emotion.model import CLASSES, CONFIG_FILE, WEIGHTS_FILE, Preprocess
from train.distill import teacher_sources

RESULTS_FILE = "results.json"


def save_model(net: torch.nn.Module, out: str | Path, prep: Preprocess, training: dict | None = None,
               fp16: bool = True, decision: Decision | None = None) -> Path:
    """Save weights (the network's own scores) and config, with the decision rule and the class prior it
    was trained under (emotion/decision.py); keep `training` facts for the card. Returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    tensors = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in net.state_dict().items()}
    save_file(tensors, out / WEIGHTS_FILE, metadata={"format": "pt"})
    data_config = {"input_size": (3, prep.size, prep.size), "mean": prep.mean, "std": prep.std,
                   "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center"}
    model_config = {"label_names": list(CLASSES), "preprocess": prep.to_config()}
    try:
        save_config_for_hf(net, out / CONFIG_FILE, model_config=model_config, data_config=data_config)
    except TypeError:  # older timm (e.g. on a GPU machine) has no data_config: set the same fields ourselves
        save_config_for_hf(net, out / CONFIG_FILE, model_config=model_config)
    cfg = json.loads((out / CONFIG_FILE).read_text())
    cfg["pretrained_cfg"].update({k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()})
    # keep only the reconstruction arguments that matter at inference
    for k in ("drop_rate", "drop_path_rate", "pretrained"):
        cfg.get("model_args", {}).pop(k, None)
    if not cfg.get("model_args"):
        cfg.pop("model_args", None)
    # the ImageNet recipe's provenance does not describe these weights
    for k in ("tag", "license", "origin_url", "paper_ids", "paper_name", "notes", "hf_hub_id"):
        cfg["pretrained_cfg"].pop(k, None)
    cfg["pretrained_cfg"]["description"] = "Facial-expression classifier (7 classes), see README.md"
    if decision is not None:
        cfg["decision"] = decision.to_config()
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    if training is not None:
        write_card(out, training)
    return out


def load_results(out: str | Path) -> dict:
    f = Path(out) / RESULTS_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def write_card(out: str | Path, training: dict | None = None, evaluation: tuple[str, dict] | None = None,
               note: str | None = None) -> Path:
    """Update results.json with new training facts, an evaluation (name, metrics) or a note; render README.md."""
    out = Path(out)
    results = load_results(out)
    if training is not None:
        results["training"] = training
        results["evaluations"] = {}  # a new model: earlier evaluations no longer apply
    if evaluation is not None:
        name, metrics = evaluation
        results.setdefault("evaluations", {})[name] = metrics
    if note is not None:
        results["note"] = note
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    (out / "README.md").write_text(render_card(results, json.loads((out / CONFIG_FILE).read_text())))
    return out


def _framing_text(config: dict, size: int) -> str:
    pre = config["preprocess"]
    if pre.get("eye_distance"):
        return (f"Input: one face crop, a square framed on the face detector's eye landmarks as the training faces "
                f"were (eyes {pre['eye_distance']:.3f} of the side apart, their midpoint {pre['eye_line']:.3f} of "
                f"the side from the top), resized to {size}x{size}; a picture that square would mostly cover (a "
                f"crop of the face already) is read as it is, its centre square.")
    return (f"Input: one face crop, as found by the app's face detector (the box grown by "
            f"{pre['face_margin']:.0%} on each side), resized to {size}x{size}.")


def _usage(config: dict, size: int) -> list[str]:
    """A usage snippet for plain timm users: timm reads config.json but not our `preprocess` block, so the grey
    conversion, the framing and the resizing the model was trained with are spelled out."""
    pre = config.get("preprocess", {})
    grey, native = pre.get("grayscale", True), pre.get("native_size")
    if pre.get("eye_distance"):
        framing = [
            "def face_square(box, right_eye, left_eye):",
            "    \"\"\"The square the model expects, from a face detector's box (x0, y0, x1, y1) and the two eye "
            "centres (x, y).\"\"\"",
            "    (x0, _, x1, _), (rx, ry), (lx, ly) = box, right_eye, left_eye",
            f"    side = max(((lx - rx) ** 2 + (ly - ry) ** 2) ** 0.5 / {pre['eye_distance']}, "
            f"{MIN_SIDE_PER_BOX_WIDTH:g} * (x1 - x0))  # a turned head: by its box",
            f"    left, top = (rx + lx) / 2 - side / 2, (ry + ly) / 2 - {pre['eye_line']} * side",
        ]
        call = ["square = face_square(box, right_eye, left_eye)  # box and eye centres from YuNet, MTCNN, dlib..."]
    else:
        framing = [
            "def face_square(x0, y0, x1, y1):",
            "    \"\"\"The square the model expects, from a face detector's box.\"\"\"",
            f"    side = max(x1 - x0, y1 - y0) * {1 + 2 * pre.get('face_margin', 0.25):g}",
            "    left, top = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2",
        ]
        call = ["square = face_square(*box)  # box: x0, y0, x1, y1 from your face detector"]
    # the side is rounded before the corners, as emotion.framing.crop_box does, so the crop is square
    framing += ["    side, left, top = round(side), round(left), round(top)",
                "    return left, top, left + side, top + side"]
    steps = [*call, "face = np.asarray(photo.crop(square))  # (the app repeats the edge where the square leaves "
             "the photo)"]
    if grey:
        steps.append("face = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)")
    if native:
        steps += [f"if min(face.shape[:2]) > {native}:  # sharp faces first come down to the training pictures' "
                  "resolution",
                  f"    face = cv2.resize(face, ({native}, {native}), interpolation=cv2.INTER_AREA)"]
    steps += [f"grow = face.shape[0] < {size}",
              f"face = cv2.resize(face, ({size}, {size}), interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)",
              "x = torch.tensor(face, dtype=torch.float32)" + ("[None, None].expand(-1, 3, -1, -1) / 255  # grey on "
                                                              "all three channels" if grey
                                                              else ".permute(2, 0, 1)[None] / 255")]
    return [
        "## Use with timm alone", "",
        "timm reads `config.json` but not its `preprocess` block, and timm's own transform (a colour crop, "
        "ImageNet framing) reads the faces wrong. Do what the app does:" if grey else
        "timm reads `config.json` but not its `preprocess` block (the framing). Do what the app does:", "",
        "```python",
        "import cv2  # pip install opencv-python-headless: the resizing the model was trained with",
        "import numpy as np",
        "import timm",
        "import torch",
        "from PIL import Image", "",
        'model = timm.create_model("hf-hub:OWNER/NAME", pretrained=True).eval()  # or "local-dir:PATH"',
        "cfg = model.pretrained_cfg", "",
        *framing, "",
        'photo = Image.open("photo.jpg").convert("RGB")',
        *steps,
        'x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)',
        "with torch.no_grad():",
        "    logits = model(x)",
        *(["    logits = (logits + model(torch.flip(x, dims=[3]))) / 2  # and the mirror image's, as the app does"]
          if pre.get("tta_flip") else []),
        *_balanced_lines(config),
        "    probabilities = logits.softmax(1)[0]",
        'print(dict(zip(cfg["label_names"], probabilities.tolist())))',
        "```", "",
    ]


def _balanced_lines(config: dict) -> list[str]:
    """The snippet's line for the balanced decision rule: the training prior divided out, as the app does."""
    d = Decision.from_config(config)
    if d.rule != "balanced":
        return []
    shares = ", ".join(f"{d.prior[c]:.6g}" for c in config.get("label_names", CLASSES))
    tau = "" if d.tau == 1 else f"{d.tau:g} * "
    return [f"    logits = logits - {tau}torch.tensor([{shares}]).log()  # balanced: the training class prior "
            "divided out, as the app does"]


def _training_lines(tr: dict, stage: str = "") -> list[str]:
    """How the model was trained, then (`--init`) how the model it started from was, when that is known."""
    if tr.get("averaged"):  # train.average: the mean of a run's checkpoints, then that run
        a = tr["averaged"]
        bn = {"clean": f"measured again on the {a['batch_norm_images']} training pictures",
              "augmented": f"measured again on the {a['batch_norm_images']} training pictures, augmented as in "
                           "training",
              "average": "averaged with the weights"}[a["batch_norm"]]
        return [f"{stage}The average of the weights of {len(a['sources'])} models (stochastic weight averaging): "
                + ", ".join(f"`{s}`" for s in a["sources"]) + " (the checkpoints after epochs "
                + ", ".join(map(str, a["epochs"])) + f" of the run below). Batch-norm statistics {bn}. "
                f"{tr.get('val_split')}: accuracy {_pct(tr.get('val_metrics', {}).get('accuracy'))}, mean-class "
                f"{_pct(tr.get('val_metrics', {}).get('mean_class_accuracy'))}.", "",
                *_training_lines(tr["run"], "The run: ")]
    recipe = tr.get("recipe", {})
    before = _training_lines(tr["started_from"], "Before that, the start model: ") if tr.get("started_from") else []
    origin = f"from `{recipe['init']}`" + (" (below)" if before else "") if recipe.get("init") else \
        "from ImageNet weights" if recipe.get("pretrained") else "from scratch (no ImageNet weights)"
    balance = recipe.get("balance")
    weighting = ("No class weights in the loss" + (" (the targets are the taggers' vote distributions, and the "
                 "metric is plain accuracy)." if recipe.get("dataset") == "ferplus" else ".")) if balance == "none" \
        else f"The loss weights classes by `{balance}` of their frequency so that disgust and fear are not drowned out."
    out = [f"{stage}Trained {origin} on {tr.get('train_images')} images of {recipe.get('dataset', 'unknown')} "
           f"({tr.get('val_split')} used to pick the epoch: best epoch {tr.get('best_epoch')}, accuracy "
           f"{_pct(tr.get('val_metrics', {}).get('accuracy'))}).", "",
           *([_distillation(recipe), ""] if recipe.get("teacher") else []),
           "Recipe: " + ", ".join(f"`{k}={v}`" for k, v in recipe.items()) + ".", "",
           "Class counts in training: " + ", ".join(f"{k} {v}" for k, v in tr.get("class_counts", {}).items())
           + ". " + weighting, ""]
    if tr.get("history"):
        out += ["| epoch | train loss | val accuracy | val mean-class accuracy | img/s |", "|---|---|---|---|---|"]
        out += [f"| {h['epoch']} | {h['train_loss']} | {_pct(h['val_accuracy'])} | "
                f"{_pct(h['val_mean_class_accuracy'])} | {h.get('images_per_s', 'n/a')} |" for h in tr["history"]]
        out.append("")
    return out + before  # the last training first, then the model it started from


def _distillation(recipe: dict) -> str:
    """The card's sentence on how a run was distilled, from one teacher or several answering as one."""
    names = teacher_sources(recipe["teacher"])
    several = len(names) > 1
    who, whose = ("teachers", "teachers'") if several else ("teacher", "teacher's")
    named = ", ".join(f"`{n}`" for n in names) + (" (their logits averaged)" if several else "")
    whole = f" (shown whole to the {who} where the student's had the mouth and chin blanked)" \
        if recipe.get("kd_whole_face") else ""
    return (f"Distilled from {named} as it trained: the loss is {1 - recipe['kd_alpha']:g} x the targets' "
            f"cross-entropy + {recipe['kd_alpha']:g} x the KL divergence from the {whose} answers (at temperature "
            f"{recipe['kd_temp']:g}, times its square) on the same augmented faces{whole}.")


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def render_card(results: dict, config: dict) -> str:
    tr = results.get("training", {})
    recipe = tr.get("recipe", {})
    size = config["pretrained_cfg"]["input_size"][-1]
    dataset = recipe.get("dataset", "unknown")
    lines = [
        "---",
        "library_name: timm",
        "pipeline_tag: image-classification",
        "license: other",
        "tags: [image-classification, timm, facial-expression-recognition, emotion, grad-cam]",
        f"datasets: [{dataset}]",
        "---",
        "",
        f"# Facial-emotion classifier: timm ResNet50, {size}x{size} {'grey' if config['preprocess']['grayscale'] else 'colour'}",
        "",
        "Seven classes: " + ", ".join(config.get("label_names", CLASSES)) + ". " + _framing_text(config, size)
        + (" Each prediction averages the face's and its mirror image's (`tta_flip`; the app's webcam mode skips "
           "the mirror to stay real time)." if config["preprocess"].get("tta_flip") else ""),
        "",
    ]
    decision = Decision.from_config(config)
    if decision.prior:
        lines += [f"Decision rule: **{decision.rule}**, {decision.describe()}. The class prior it divides "
                  "out, each class's share of the training data (`config.json`'s `decision` block): "
                  + ", ".join(f"{c} {100 * v:.1f}%" for c, v in decision.prior.items())
                  + ". The weights file holds the network's own scores; the app folds the rule's shift, "
                  "minus tau x log(prior), into the classifier's bias when it loads the model.", ""]
    if results.get("note"):
        lines += [f"> {results['note']}", ""]
    evals = results.get("evaluations", {})
    if evals:
        rule = Decision.from_config(config).rule
        lines += ["## Results", "",
                  f"Each row is read by the app's decision rule (**{rule}**: {DESCRIPTIONS[rule]}); where the "
                  "training class prior is known, the row below it reads the same probabilities by the other "
                  "rule.", "",
                  "| evaluation | n | rule | accuracy | mean-class accuracy | " + " | ".join(CLASSES) + " |",
                  "|---|---|---|---|---|" + "---|" * len(CLASSES)]
        for name, m in evals.items():
            rows = m.get("readings") or {m.get("decision_rule", "prior"): m}
            for i, (r, v) in enumerate(rows.items()):
                pc = v["per_class_accuracy"]
                lines.append(f"| {name if i == 0 else ''} | {m['n'] if i == 0 else ''} | {r} | "
                             f"{_pct(v['accuracy'])} | {_pct(v['mean_class_accuracy'])} | "
                             + " | ".join(_pct(pc.get(c)) for c in CLASSES) + " |")
        lines += ["", "Reproduce each row with `python -m train.evaluate --weights weights --data FER2013_FOLDER "
                  "--dataset DATASET --split SPLIT --out DIR` (FER+ also `--labels ferplus_labels.csv`; "
                  "\"faces detected\" rows `--detect-faces`: the app's own face detector and crop run on each "
                  "test picture, a face not found counts as wrong); a row named after a folder is a `<class>/<image>` set "
                  "of face crops from another collection, `--data FOLDER --dataset folder` (CK+48: posed faces, "
                  "six classes, no neutral); see docs/training.md in the project.", ""]
    if tr:
        lines += ["## Training", ""] + _training_lines(tr)
    pictures = [(name, m["picture"]) for name, m in evals.items() if m.get("picture")]
    if pictures:
        lines += ["## Confusion matrices", ""]
        lines += [f"![{name}]({picture})" for name, picture in pictures] + [""]
    lines += _usage(config, size)
    lines += [
        "## Intended use and limits", "",
        "For explaining and auditing facial-expression recognition (with the checked heatmaps of the app), "
        "not for decisions about people. An expression is not an emotion: the model reads posed or caught "
        "expressions in the style of its training data (FER2013: web images, mostly frontal, grey, 48x48). "
        "Accuracy differs by class (see the table) and is untested by age, gender or skin tone here; audit "
        "it on your own population before relying on it.", "",
    ]
    return "\n".join(lines)
