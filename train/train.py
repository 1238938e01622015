"""Train the timm ResNet50 emotion classifier and write it to a model folder (timm Hub format).

    python -m train --dataset ferplus --data ../shared/datasets/fer2013 \
        --labels ../shared/datasets/ferplus/ferplus_labels.csv --run-dir runs/ferplus
    python -m train --dataset rafdb --data RAF-DB/basic --size 96 --color --pretrained
    python -m train --resume runs/ferplus/last.pt  # continues where the checkpoint stopped
    torchrun --nproc_per_node 2 -m train ...  # the same run on two processes (DistributedDataParallel)

The whole training split is read into memory once (on the GPU when there is one) and augmented there
batch by batch, so the GPU never waits on image decoding. Every epoch is scored on the validation split
(FER2013 PublicTest); the best epoch is kept in RUN_DIR/best/, a model folder the app can load. `--out DIR`
copies it there when training ends (e.g. `--out weights` to replace the shipped model).

Started by torchrun, N processes train one model (DistributedDataParallel, train/distributed.py): each
holds the whole split, draws the same order and the same augmentation for every batch and trains on its
1/N of it (with --mixup or --cutmix, each mixes the whole batch, since a face is paired with one in
another share, then keeps its 1/N); the gradients are averaged, so a step is that of one process on the
whole batch except that batch norm measures each process's share (its running statistics are averaged
after every epoch). `--batch-size` is the whole batch over all processes, so the schedule (steps, learning
rates, images seen) does not depend on N; rank 0 alone prints, logs and writes checkpoints and model
folders.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from emotion.decision import RULES, Decision, training_prior
from emotion.framing import FER_FRAMING, measure_framing
from emotion.model import CLASSES, Preprocess, create_net, mirror_average, mirrored
from train import data as D
from train import distributed
from train.augment import augment, jpeg, mix, mixer, normalize
from train.distill import Teacher, distill_loss, ensemble_logits, teacher_sources
from train.export import load_results, save_model, write_card
from train.framed import CACHE_FILE, app_framed, as_rgb, show_framed
from train.metrics import scores

VAL_SPLIT = {"fer2013": "public_test", "ferplus": "public_test", "rafdb": "test", "folder": "val"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["fer2013", "ferplus", "rafdb", "folder"], default="fer2013")
    p.add_argument("--data", default="../shared/datasets/fer2013", help="data set root (or fer2013.csv)")
    p.add_argument("--labels", default=None, help="ferplus: per-file vote table for the folder layout "
                   "(without it, fer2013new.csv beside fer2013.csv)")
    p.add_argument("--train-split", default=None, help="default: train (folder: root/train if present, else root)")
    p.add_argument("--val-split", default=None, help="default: public_test (fer2013), test (rafdb), val (folder)")
    p.add_argument("--out", default=None, help="when training ends, copy the best model folder here "
                   "(e.g. weights); it always is in RUN_DIR/best")
    p.add_argument("--run-dir", default=None, help="checkpoints and log (default runs/<dataset>)")
    p.add_argument("--size", type=int, default=64, help="input side in pixels")
    p.add_argument("--color", action="store_true", help="keep colour (default: grey, as FER2013)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128,
                   help="images per step over all processes (with torchrun, each takes 1/N of them)")
    p.add_argument("--opt", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate for batch 256, scaled linearly (default: adamw 2e-3, sgd 0.1)")
    p.add_argument("--weight-decay", type=float, default=None, help="default: adamw 0.05, sgd 5e-4")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="default 0.1 for hard labels, 0 for FER+ vote distributions (already soft)")
    p.add_argument("--balance", choices=["none", "sqrt", "inverse"], default=None,
                   help="class weights in the loss: none, 1/sqrt(frequency), or 1/frequency "
                   "(default: sqrt; none for ferplus, whose metric is plain accuracy)")
    p.add_argument("--jpeg-p", type=float, default=0.25, help="share of training faces re-encoded as JPEG")
    p.add_argument("--mixup", type=float, default=0.0, help="mixup's Beta alpha (0: off), e.g. 0.2")
    p.add_argument("--cutmix", type=float, default=0.0, help="cutmix's Beta alpha (0: off), e.g. 1.0; with "
                   "--mixup too, each mixed batch takes one of the two")
    p.add_argument("--mix-prob", type=float, default=1.0, help="share of batches mixed when --mixup or --cutmix")
    p.add_argument("--erase-mouth", type=float, default=0.0, help="share of training faces whose mouth and chin "
                   "are blanked (brows and eyes must then carry the expression)")
    p.add_argument("--sharpen", type=float, default=0.0, help="share of training faces given an unsharp mask "
                   "(crisp, as studio photographs are; FER2013's faces are soft)")
    p.add_argument("--fer2013-blend", type=float, default=0.0, help="ferplus: the share of each training "
                   "target given to FER2013's own label of the face (0: the FER+ votes alone). FER+'s taggers "
                   "read many faces FER2013 files as angry, fearful or sad as neutral; this keeps some of that")
    p.add_argument("--fer2013-blend-only", nargs="+", default=None, choices=CLASSES, metavar="CLASS",
                   help="with --fer2013-blend: blend only the faces FER2013 files under these classes (e.g. angry); "
                   "the others keep their FER+ votes")
    p.add_argument("--app-framing", type=float, default=0.0, help="share of training faces shown as the app "
                   "frames them: found by its face detector and cut on the eyes as a photo's face is (train/framed.py; "
                   "detected once, kept in the run folder)")
    p.add_argument("--teacher", nargs="+", default=None, help="distil from this model (a model folder or "
                   "local-dir:PATH; any side, see train/distill.py), or from several answering as one (their "
                   "logits averaged): the answers on each augmented batch are a second target")
    p.add_argument("--kd-alpha", type=float, default=0.5, help="with --teacher: the distillation term's share of "
                   "the loss (the targets' cross-entropy has the rest)")
    p.add_argument("--kd-whole-face", action="store_true", help="with --teacher and --erase-mouth: the teachers "
                   "answer on each face before its mouth is blanked, so the student learns to read from brows and "
                   "eyes what the whole face shows")
    p.add_argument("--kd-temp", type=float, default=2.0, help="with --teacher: the softmax temperature of both "
                   "teacher and student in the distillation term")
    p.add_argument("--drop-rate", type=float, default=0.3, help="dropout before the classifier")
    p.add_argument("--drop-path", type=float, default=0.05, help="stochastic depth")
    p.add_argument("--output-stride", type=int, choices=[8, 16, 32], default=None,
                   help="the network's output stride: 16 or 8 dilate layer4 (and layer3 for 8) instead of striding "
                   "them, so their heatmaps are grids of input/16 or input/8 cells (same weights; slower); "
                   "written to config.json's model_args (default: the --init model's, else 32)")
    p.add_argument("--pretrained", action="store_true", help="start from timm's ImageNet weights (needs internet)")
    p.add_argument("--init", default=None, help="start from this model's weights (a model folder, local-dir:PATH or "
                   "hf-hub:owner/name), e.g. to fine-tune the shipped model on another data set or to finish a "
                   "schedule cut short; its normalisation is kept")
    p.add_argument("--rule", choices=RULES, default="balanced",
                   help="the decision rule the model folder is written with (emotion/decision.py): balanced "
                   "divides the training class prior out of the probabilities, prior keeps it; "
                   "`python -m train.decide` measures both and can change it later")
    p.add_argument("--tta-flip", action="store_true", help="average with the mirrored face at test time (app too)")
    p.add_argument("--limit", type=int, default=None, help="use a random subset of N training images")
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many minutes, keeping the best")
    p.add_argument("--fit-schedule", action="store_true",
                   help="with --time-limit: after each warm-up epoch (or the first, for a shorter warm-up), cut --epochs "
                   "to what fits in the time left, "
                   "so the cosine schedule ends on time instead of being cut off at a high learning rate")
    p.add_argument("--resume", default=None, help="checkpoint (last.pt) to continue from")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch, per process (under torchrun "
                   "the default is its OMP_NUM_THREADS, 1)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (+11%% img/s on 2 CPU cores)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bfloat16 autocast for the training passes: auto = on a GPU, and on a CPU that has bf16 "
                   "instructions (AVX512-BF16 or AMX: 2-2.6x the img/s of float32 on 2 cores); validation always "
                   "runs as the app does")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def use_bf16(mode: str, device: torch.device) -> bool:
    """Whether the training passes run under bfloat16 autocast (see --bf16)."""
    if mode != "auto":
        return mode == "on"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and torch.cpu._is_avx512_bf16_supported()


def class_weights(counts: list[int], mode: str) -> torch.Tensor:
    counts = torch.tensor(counts, dtype=torch.float).clamp(min=1)
    w = {"none": torch.ones_like(counts), "sqrt": counts.rsqrt(), "inverse": 1 / counts}[mode]
    return w / (w * counts).sum() * counts.sum()  # mean weight per sample stays 1


def blend_originals(targets: torch.Tensor, originals: torch.Tensor | None, share: float,
                    only: list[int] | None = None) -> torch.Tensor:
    """FER+ targets with `share` of each row moved to FER2013's own label of the face (rows whose own label is
    not one of our classes, or with `only`, not one of those class indices, keep their votes)."""
    known = None if originals is None else originals >= 0
    if known is None or not known.any():
        raise SystemExit("--fer2013-blend needs FER2013's own label of each face: the table's fer2013_label "
                         "column or class folders, or fer2013.csv's emotion column")
    if only is not None:
        known &= torch.isin(originals, torch.tensor(only, dtype=originals.dtype))
    known = known.to(targets.device)
    own = F.one_hot(originals.clamp(min=0).to(targets.device), targets.shape[1]).float()
    return torch.where(known[:, None], (1 - share) * targets + share * own, targets)


def soft_cross_entropy(logits, target, weight, smoothing: float, whole=None):
    """Cross-entropy against a target distribution per row, with class weights and label smoothing as
    F.cross_entropy's: each row counts with its own target's weight (for a hard label, its class's), and
    smoothing moves target mass, not a row's weight, so the sum is divided by the unsmoothed targets' weight.

    `whole`: the targets of the whole batch when these rows are one process's share of it; the result is
    then the share's part of the whole batch's loss (the parts of all shares add up to it)."""
    rows = ((target if whole is None else whole) * weight).sum()
    if smoothing:
        target = target * (1 - smoothing) + smoothing / target.shape[1]
    logp = logits.log_softmax(1)
    return -(target * weight * logp).sum() / rows


@torch.no_grad()
def evaluate(net, split: D.Split, prep: Preprocess, device, batch_size=512,
             world: distributed.World = distributed.World()) -> dict:
    """Scores on `split`; with several processes each predicts its block of the split and all get all."""
    net.eval()
    mine = world.share(len(split))
    preds = [torch.zeros(0, dtype=torch.int64)]
    for i in range(mine.start, mine.stop, batch_size):
        x = normalize(split.images[i:min(i + batch_size, mine.stop)].to(device), prep.mean, prep.std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = net(x).float()
            if prep.tta_flip:
                logits = mirror_average(logits, net(mirrored(x)).float())
        preds.append(logits.softmax(1).argmax(1).cpu())
    net.train()
    pred = torch.cat(world.all_gather(torch.cat(preds)))
    return scores(split.labels.numpy(), pred.numpy())


def load_data(args) -> tuple[D.Split, D.Split, str, int | None]:
    """The training and validation splits, the validation split's name, and the training pictures' side.

    The validation split is read as train.evaluate and the app read faces (a picture larger than the
    training pictures is first brought down to their side), so the accuracy that picks the epoch is theirs.
    A validation split that does not exist is refused, except for the folder layout with none named, which
    holds out 10% of the training split.
    """
    gray = not args.color
    train_set = D.load_split(args.dataset, args.data, args.train_split, args.size, gray, args.limit, args.seed,
                             labels=args.labels)
    native = D.native_size(args.dataset, args.data, args.train_split, args.labels)
    val_split = args.val_split or VAL_SPLIT[args.dataset]
    try:
        val = D.load_split(args.dataset, args.data, val_split, args.size, gray, args.val_limit, args.seed,
                           labels=args.labels, native_size=native)
    except D.DatasetError:
        if args.val_split or args.dataset != "folder":  # a split the user named, or one the layout must have
            raise
        train_set, val = D.split_off(train_set, 0.1, args.seed)
        val_split = "10% held out of train"
    return train_set, val, val_split, native


def main(argv=None):
    args = parse_args(argv)
    # several processes under torchrun: each uses its share of the cores (torchrun's OMP_NUM_THREADS), not
    # the thread count a single-process checkpoint was written with
    several = distributed.launched() and int(os.environ["WORLD_SIZE"]) > 1
    ckpt = None
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        resumed = vars(args)
        args = argparse.Namespace(**{**vars(parse_args([])),  # defaults of options added since the checkpoint
                                     **ckpt["args"], "resume": args.resume, "time_limit": resumed["time_limit"],
                                     "device": resumed["device"], "no_progress": resumed["no_progress"],
                                     "out": resumed["out"] or ckpt["args"].get("out"),
                                     "threads": resumed["threads"] or (None if several else ckpt["args"].get("threads"))})
    if args.threads:
        torch.set_num_threads(args.threads)
    world = distributed.start(args.device)
    say = print if world.main else (lambda *a, **k: None)
    torch.manual_seed(args.seed)
    device = distributed.device_for(args.device, world)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # one input shape all run long
    if args.batch_size < world.size:
        raise SystemExit(f"--batch-size {args.batch_size} is the batch over all {world.size} processes: "
                         "give each at least one image")
    soft = args.dataset == "ferplus"
    if args.fer2013_blend and not (soft and 0 < args.fer2013_blend <= 1):
        raise SystemExit(f"--fer2013-blend is a share of each FER+ target, in (0, 1], and needs --dataset ferplus "
                         f"(not {args.fer2013_blend} with {args.dataset})")
    if not 0 <= args.app_framing <= 1:
        raise SystemExit(f"--app-framing is a share of the training faces, in [0, 1] (not {args.app_framing})")
    if args.fer2013_blend_only and not args.fer2013_blend:
        raise SystemExit("--fer2013-blend-only names the classes --fer2013-blend applies to: give --fer2013-blend too")
    run_dir = Path(args.run_dir or f"runs/{args.dataset}")
    best_dir = run_dir / "best"
    if args.label_smoothing is None:
        args.label_smoothing = 0.0 if soft else 0.1
    if args.balance is None:
        args.balance = "none" if soft else "sqrt"

    # ---- data: everything in memory, on the training device
    t0 = time.time()
    gray = not args.color
    train_set, val, val_split, native = load_data(args)
    x_all = train_set.images.float().div(255)
    mean = tuple([round(x_all.mean().item(), 4)] * 3) if gray else tuple(x_all.mean((0, 2, 3)).tolist())
    std = tuple([round(x_all.std().item(), 4)] * 3) if gray else tuple(x_all.std((0, 2, 3)).tolist())
    del x_all
    start = None
    if ckpt and "mean" in ckpt:  # a resume keeps the normalisation it began with (that of --init, if any)
        mean, std = tuple(ckpt["mean"]), tuple(ckpt["std"])
    elif args.init:  # the weights were fitted to the start model's normalisation
        # (checkpoints written before they kept the normalisation read it from --init again on a resume)
        start = _init_model(args.init)
        mean, std = start.prep.mean, start.prep.std
        args.started_from = load_results(start.source).get("training")  # for the model card
    if args.output_stride is None:  # a dilated model fine-tuned stays dilated unless asked otherwise
        args.output_stride = start.net.feature_info[-1]["reduction"] if start is not None else 32
    framing = world.broadcast(_framing(train_set, args.dataset, args.seed) if world.main else None)
    prep = Preprocess(size=args.size, mean=mean, std=std, grayscale=gray,
                      native_size=native,
                      tta_flip=args.tta_flip, **framing)
    images, labels = train_set.images.to(device), train_set.labels.to(device)
    if args.app_framing and prep.eye_distance is None:
        raise SystemExit("--app-framing needs the app's face detector to frame the training faces, and it found "
                         "too few of them here (or is not installed)")
    if world.main:  # made once the run is sure to start, so a refused run leaves no folder behind
        run_dir.mkdir(parents=True, exist_ok=True)
    framed = None
    if args.app_framing:
        framed, found = app_framed(train_set.images, prep, world, not args.no_progress, run_dir / CACHE_FILE)
        framed = framed.to(device)
        say(f"app framing: the detector found {int(found.sum())} of {len(found)} training faces; "
            f"{args.app_framing:.0%} of each batch is shown as the app frames them")
    targets = train_set.targets.to(device) if soft else F.one_hot(labels, len(CLASSES)).float()
    if args.fer2013_blend:
        only = [CLASSES.index(c) for c in args.fer2013_blend_only] if args.fer2013_blend_only else None
        targets = blend_originals(targets, train_set.originals, args.fer2013_blend, only)
    decision = Decision(rule=args.rule, prior=training_prior(targets.cpu().numpy(), CLASSES))
    say(f"data: {len(train_set)} train / {len(val)} val ({val_split}) images at {args.size}px in "
          f"{time.time() - t0:.0f}s; classes {dict(zip(CLASSES, train_set.class_counts()))}")

    # ---- model, optimiser, schedule
    dilation = {"output_stride": args.output_stride} if args.output_stride != 32 else {}
    net = create_net(len(CLASSES), pretrained=args.pretrained, drop_rate=args.drop_rate,
                     drop_path_rate=args.drop_path, **dilation).to(device, memory_format=torch.channels_last)
    if start and not ckpt:  # (a resume loads the checkpoint's weights below)
        net.load_state_dict(start.net.state_dict())
        say(f"init: weights of {start.name()}")
    del start
    if world.size > 1:  # each process holds a share of every batch: batch norm measures the whole batch
        net = distributed.whole_batch_norm(net, device)
    if args.compile:
        net.compile()  # in place: state_dict keys stay those of the plain timm model
    weights = class_weights(train_set.class_counts(), args.balance).to(device)
    adamw = args.opt == "adamw"
    args.lr = args.lr or (2e-3 if adamw else 0.1)
    args.weight_decay = args.weight_decay if args.weight_decay is not None else (0.05 if adamw else 5e-4)
    lr = args.lr * args.batch_size / 256
    groups = [{"params": [p for p in net.parameters() if p.ndim > 1], "weight_decay": args.weight_decay},
              {"params": [p for p in net.parameters() if p.ndim <= 1], "weight_decay": 0.0}]  # no decay on BN/bias
    opt = (torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999)) if adamw
           else torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True))
    steps_per_epoch = len(train_set) // args.batch_size
    total, warmup = args.epochs * steps_per_epoch, int(args.warmup_epochs * steps_per_epoch)

    def lr_at(step):  # linear warm-up, then cosine to zero
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    start_epoch, best, history = 0, {"accuracy": -1.0}, []
    if ckpt:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch, best, history = ckpt["epoch"] + 1, ckpt["best"], ckpt["history"]
        say(f"resumed from {args.resume} at epoch {start_epoch}")
    model = net  # what the training passes call: with several processes, the DDP wrapper that averages gradients
    if world.size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)
    share = world.share(args.batch_size)  # this process's rows of every batch
    if world.size > 1:
        say(f"distributed: {world.size} processes ({torch.distributed.get_backend()}); of each batch of "
            f"{args.batch_size}, rank 0 trains on {len(share)} images")
    keep = None if world.size == 1 else torch.arange(share.start, share.stop, device=device)
    mixing = mixer(args.mixup, args.cutmix, args.mix_prob, len(CLASSES))
    if mixing is not None and args.batch_size % 2:
        raise SystemExit("--mixup and --cutmix blend a batch with itself reversed: give an even --batch-size")

    # ---- training loop
    bf16 = use_bf16(args.bf16, device)
    say(f"bf16 autocast for training passes: {'on' if bf16 else 'off'} ({args.bf16})")
    if args.kd_whole_face and not (args.teacher and args.erase_mouth > 0):
        raise SystemExit("--kd-whole-face shows the teachers the faces whose mouths --erase-mouth blanks: give both "
                         "--teacher and --erase-mouth")
    teachers = []
    if args.teacher:
        if not 0 <= args.kd_alpha <= 1 or args.kd_temp <= 0:
            raise SystemExit("--kd-alpha is a share (0 to 1) and --kd-temp a temperature above 0")
        for source in teacher_sources(args.teacher):
            t = Teacher(_init_model(source, "--teacher"), prep.mean, prep.std, gray, device, bf16)
            teachers.append(t)
            say(f"distillation: teacher {source} ({t.prep.size}px{', mirror-averaged' if t.prep.tta_flip else ''})")
        say(f"distillation: alpha {args.kd_alpha}, temperature {args.kd_temp}"
            + (f", the {len(teachers)} teachers' logits averaged" if len(teachers) > 1 else ""))
    deadline = time.time() + args.time_limit * 60 if args.time_limit else None
    asked_epochs = args.epochs
    log_file = run_dir / "log.jsonl"
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, args.epochs):
        net.train()
        # The order and the augmentation of every batch come from generators seeded by the epoch, the same in
        # every process (and a resumed run draws the batches of an unbroken one); dropout and stochastic depth
        # draw from the global generator, seeded apart per process.
        seed = args.seed * 1000 + epoch
        draw = torch.Generator(device=device).manual_seed(seed)
        draw_cpu = draw if device.type == "cpu" else torch.Generator().manual_seed(seed)  # JPEG: on the CPU
        torch.manual_seed(seed + 1_000_003 * world.rank)
        t_epoch, seen, loss_sum = time.time(), 0, torch.zeros((), device=device)
        order = torch.randperm(len(train_set), device=device, generator=draw)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=args.no_progress or not world.main, leave=False)
        for i in bar:
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]  # the whole batch, over all processes
            mine = idx if keep is None else idx[keep]
            # mixing pairs a face with one in another share: then every process augments the whole batch
            rows = keep if mixing is None else None
            batch = images[idx]
            if framed is not None:  # (drawn only with --app-framing: other runs keep their draws)
                batch = show_framed(batch, framed[idx], args.app_framing, draw)
            x, seen_whole = augment(jpeg(batch, args.jpeg_p, generator=draw_cpu, keep=rows), prep.mean,
                                    prep.std, mouth_p=args.erase_mouth, sharpen_p=args.sharpen, generator=draw, keep=rows, with_whole=True)
            whole = targets[idx]
            if mixing is not None:
                if args.kd_whole_face:  # the same pairs and lambda as x's (drawn from the seed)
                    seen_whole = mix(mixing, seen_whole, whole, seed * 100_003 + i)[0]
                    seen_whole = seen_whole if keep is None else seen_whole[keep]
                x, whole = mix(mixing, x, whole, seed * 100_003 + i)
                x = x if keep is None else x[keep]
            y, whole = (whole, None) if keep is None else (whole[keep], whole)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            # this share's part of the whole batch's loss; DDP averages the gradients over the processes,
            # so each is scaled by their number to give the gradient of the whole batch's loss
            loss = soft_cross_entropy(logits.float(), y, weights, args.label_smoothing, whole=whole)
            if teachers:  # the same faces through the teachers; their part is also the whole batch's share
                shown = seen_whole if args.kd_whole_face else x
                kd = distill_loss(logits, ensemble_logits(teachers, shown), args.kd_temp, rows=len(idx))
                loss = (1 - args.kd_alpha) * loss + args.kd_alpha * kd
            opt.zero_grad(set_to_none=True)
            (loss * world.size).backward()
            opt.step()
            step += 1
            seen += len(idx)
            loss_sum += loss.detach() * len(idx)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss.item() * world.size:.3f}", lr=f"{lr_at(step):.4f}")
            if args.no_progress and i % 50 == 49 and world.main:  # a heartbeat for logs of long runs
                acc = (logits.argmax(1) == labels[mine]).float().mean().item()
                print(f"  step {i + 1}/{steps_per_epoch} loss {loss.item() * world.size:.3f} batch accuracy {acc:.2f} "
                      f"lr {lr_at(step):.5f}", flush=True)
        world.sum_(loss_sum)  # the parts of every batch's loss, added up over the processes
        world.average_buffers(net)  # batch norm's running statistics, averaged over the processes
        train_time = time.time() - t_epoch
        m = evaluate(net, val, prep, device, world=world)
        row = {"epoch": epoch + 1, "train_loss": round(loss_sum.item() / max(seen, 1), 4),
               "val_accuracy": round(m["accuracy"], 4), "val_mean_class_accuracy": round(m["mean_class_accuracy"], 4),
               "images_per_s": round(seen / train_time, 1), "epoch_s": round(time.time() - t_epoch, 1),
               "world_size": world.size}
        history.append(row)
        if world.main:
            with log_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
        if args.fit_schedule and deadline and epoch + 1 <= max(1.0, args.warmup_epochs) and not ckpt and world.main:
            # Still warming up: the cosine has not begun, so its length can change without a jump (a warm-up shorter
            # than an epoch is fitted after the first epoch all the same, the cosine barely begun). The first
            # epoch pays for warm-up (cuDNN's search), so the second may lengthen it again. 15% to spare: epoch
            # times wandered by that much on a GPU machine, and an overrun is cut off above a learning rate of zero.
            left = (deadline - time.time()) / (1.15 * row["epoch_s"])
            fit = min(asked_epochs, max(epoch + 2, epoch + 1 + int(left)))
            if fit != args.epochs:
                print(f"fit-schedule: {row['epoch_s']:.1f}s an epoch; the schedule now ends after {fit} epochs "
                      f"(asked for {asked_epochs})", flush=True)
                args.epochs = fit
        args.epochs = world.broadcast(args.epochs)  # rank 0's clock decides for all
        total = args.epochs * steps_per_epoch
        if m["accuracy"] > best["accuracy"]:
            best = {**m, "epoch": epoch + 1}
            if world.main:
                save_model(net, best_dir, prep, training=_training_facts(args, train_set, val_split, best, history),
                           decision=decision)
        if world.main:
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "best": best,
                        "history": history, "args": vars(args), "mean": list(prep.mean), "std": list(prep.std)},
                       run_dir / "last.pt")
        if world.broadcast(bool(deadline and time.time() > deadline)):
            say(f"time limit reached after epoch {epoch + 1}")
            break
        if epoch + 1 >= args.epochs:  # the schedule may have been fitted shorter than range() above
            break
    # the card of the best epoch, with the full curve
    where = best_dir
    if world.main:
        write_card(best_dir, _training_facts(args, train_set, val_split, best, history))
        if args.out and len(history) >= args.epochs:  # only a finished schedule replaces a model folder
            where = Path(args.out)
            where.mkdir(parents=True, exist_ok=True)
            for f in best_dir.iterdir():
                shutil.copy2(f, where / f.name)
    distributed.stop()
    say(f"best {val_split} accuracy {best['accuracy']:.4f} (mean-class {best['mean_class_accuracy']:.4f}) "
          f"at epoch {best['epoch']}; model in {where}")
    return best


def load_checkpoint(path) -> dict:
    """A checkpoint this trainer wrote (`last.pt`), read with torch.load(weights_only=True): tensors and plain
    data only, so a file that carries code is refused, never run. Anything else ends with a plain message."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- refused pickle, damaged zip, missing file: all one answer
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SystemExit(f"{path} is not a checkpoint written by `python -m train` (tensors and plain data "
                         f"only): {why}") from None


def _init_model(source: str, flag: str = "--init"):
    """The model to start from (or, `flag` "--teacher", to distil from), its classifier rows in our class order
    (matched by name). Only its network and preprocessing are used: no ONNX engine is made for it."""
    from emotion.model import ModelLoadError, load_model
    try:  # safetensors only; the network's own scores
        start = load_model(source, fallback=False, rule="prior", engine="torch")
    except ModelLoadError as e:
        raise SystemExit(f"{flag} {source}: {e}") from None
    if sorted(start.labels) != sorted(CLASSES):
        raise SystemExit(f"{flag} {source}: its classes {list(start.labels)} are not {list(CLASSES)}")
    order = [start.labels.index(c) for c in CLASSES]
    fc = start.net.get_classifier()
    with torch.no_grad():
        fc.weight.copy_(fc.weight[order].clone())
        fc.bias.copy_(fc.bias[order].clone())
    return start


def _framing(train_set: D.Split, dataset: str, seed: int, n: int = 300) -> dict:
    """How the training faces are framed, measured with the app's face detector, so the app crops alike.

    Without the detector (e.g. a GPU machine with no yuface wheel) or when it finds too few faces,
    the app falls back to the detector's box with a margin.
    """
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train_set), generator=g)[:n]
    crops = [as_rgb(train_set.images[i]) for i in pick.tolist()]
    try:
        found = measure_framing(crops)
    except ImportError as e:
        if dataset in ("fer2013", "ferplus"):
            print(f"framing: face detector not available ({e}); using FER2013's, measured here: {FER_FRAMING}")
            return {"eye_distance": FER_FRAMING[0], "eye_line": FER_FRAMING[1]}
        print(f"framing: face detector not available ({e}); the app will frame faces by box and margin")
        return {}
    if found is None:
        print("framing: too few faces found in the training pictures; the app will frame faces by box and margin")
        return {}
    eye_distance, eye_line, n_found = found
    print(f"framing: eyes {eye_distance} of the side apart, at {eye_line} from the top ({n_found} of {len(crops)})")
    return {"eye_distance": eye_distance, "eye_line": eye_line}


def _training_facts(args, train_set, val_split, best, history) -> dict:
    """What the model card says about how the model was made."""
    keep = ("dataset", "labels", "size", "color", "epochs", "batch_size", "opt", "lr", "weight_decay", "warmup_epochs",
            "label_smoothing", "fer2013_blend", "fer2013_blend_only", "balance", "mixup", "cutmix", "mix_prob", "erase_mouth",
            "sharpen", "app_framing", "jpeg_p", "output_stride",
            "drop_rate", "drop_path", "pretrained", "init", "teacher", "kd_alpha", "kd_temp", "kd_whole_face", "tta_flip",
            "limit", "bf16", "rule", "seed")
    recipe = {k: getattr(args, k) for k in keep if (k not in ("kd_alpha", "kd_temp", "kd_whole_face") or args.teacher)
              and (k not in ("fer2013_blend", "fer2013_blend_only", "app_framing", "sharpen") or getattr(args, k))
              and (k != "output_stride" or getattr(args, k) != 32)}
    return {"recipe": recipe, "train_images": len(train_set),
            "class_counts": dict(zip(CLASSES, train_set.class_counts())), "val_split": val_split,
            **({"started_from": args.started_from} if getattr(args, "started_from", None) else {}),
            "best_epoch": best.get("epoch"), "val_metrics": {k: v for k, v in best.items() if k != "epoch"},
            "history": history}


if __name__ == "__main__":
    main()
