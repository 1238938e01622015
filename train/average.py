"""Average the weights of several epochs of one run (stochastic weight averaging) into one model folder.

    cp runs/cycle2/last.pt runs/cycle2/epoch6.pt    # after each epoch worth keeping (train keeps only the last)
    python -m train.average runs/cycle2/epoch6.pt runs/cycle2/epoch8.pt runs/cycle2/last.pt weights \
        --out runs/swa

SOURCES are checkpoints of one run (`last.pt` or copies of it) and, optionally, model folders with the same
normalisation (e.g. the model the run started from with `--init`). Their weights are averaged, then the
batch-norm statistics, which do not average, are measured again on the run's training pictures (`--bn`).
The result is scored on the run's validation split, as training scores an epoch, and written to --out as a
model folder with its card; the data, framing and recipe are the run's (from its newest checkpoint and its
best/ folder). The averaged model is still one ResNet50: it costs nothing at inference.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from emotion.model import CLASSES, ModelLoadError, create_net, load_model
from train import train as T
from train.augment import augment, normalize
from train.export import save_model


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.average", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", help="checkpoints of one run, and model folders")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--bn", choices=["clean", "augmented", "average"], default="clean",
                   help="batch-norm statistics: measured on the training pictures as they are, or augmented as "
                   "in training, or the sources' statistics averaged")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def averaged(states: list[dict]) -> dict:
    """The mean of each floating-point tensor; counters (BN's num_batches_tracked) from the first."""
    return {k: (torch.stack([s[k].float() for s in states]).mean(0) if v.is_floating_point() else v)
            for k, v in states[0].items()}


@torch.no_grad()
def measure_batch_norm(net, images: torch.Tensor, prep, batch_size: int, augmented: bool, progress: bool) -> int:
    """Recompute every BN layer's running mean and variance as plain averages over `images` (uint8)."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    net.eval()  # dropout and drop-path off: only the BN layers learn their statistics
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches
        m.train()
    n = 0
    for i in tqdm(range(0, len(images), batch_size), desc="batch-norm statistics", disable=not progress):
        x = images[i:i + batch_size]
        if len(x) < 2:
            break
        net(augment(x, prep.mean, prep.std) if augmented else normalize(x, prep.mean, prep.std))
        n += len(x)
    net.eval()
    return n


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ckpts = [Path(s) for s in args.sources if Path(s).is_file()]
    folders = [s for s in args.sources if not Path(s).is_file()]
    if not ckpts:
        raise SystemExit("give at least one checkpoint of the run (its data and recipe come from it)")
    loaded = {str(c): T.load_checkpoint(c) for c in ckpts}  # tensors and plain data only
    newest = max(loaded.values(), key=lambda c: c["epoch"])
    run = argparse.Namespace(**{**vars(T.parse_args([])), **newest["args"]})
    run_dirs = {c["args"]["run_dir"] or f"runs/{c['args']['dataset']}" for c in loaded.values()}
    if len(run_dirs) > 1:
        raise SystemExit(f"the checkpoints come from different runs: {sorted(run_dirs)}")
    best = load_model(Path(run_dirs.pop()) / "best", fallback=False, rule="prior")
    prep = best.prep  # the run's framing and normalisation
    states = [c["model"] for c in loaded.values()]
    for f in folders:
        try:
            m = load_model(f, fallback=False, rule="prior")  # safetensors only; the network's own scores
        except ModelLoadError as e:
            raise SystemExit(f"{f}: {e}") from None
        if (m.prep.mean, m.prep.std, m.prep.size) != (prep.mean, prep.std, prep.size):
            raise SystemExit(f"{f}: its normalisation or input size differs from the run's")
        states.append(m.net.state_dict())

    train_set, val, val_split, _ = T.load_data(run)
    net = create_net(len(CLASSES), drop_rate=run.drop_rate, drop_path_rate=run.drop_path)
    net.load_state_dict(averaged(states))
    net = net.to(device, memory_format=torch.channels_last)
    seen = 0
    if args.bn != "average":
        torch.manual_seed(run.seed)
        order = torch.randperm(len(train_set))
        seen = measure_batch_norm(net, train_set.images[order].to(device), prep, args.batch_size,
                                  args.bn == "augmented", not args.no_progress)
    m = T.evaluate(net, val, prep, device)
    print(f"averaged {len(states)} models; {val_split}: accuracy {m['accuracy']:.4f} "
          f"(mean-class {m['mean_class_accuracy']:.4f})")
    run_facts = T._training_facts(run, train_set, val_split, newest["best"], newest["history"])
    facts = {"averaged": {"sources": [str(s) for s in args.sources],
                          "epochs": [c["epoch"] + 1 for c in loaded.values()], "batch_norm": args.bn,
                          "batch_norm_images": seen},
             "train_images": len(train_set), "val_split": val_split,
             "val_metrics": dict(m), "run": run_facts}
    save_model(net, args.out, prep, training=facts, decision=best.decision)
    print(f"model in {args.out}")
    return m


if __name__ == "__main__":
    main()
