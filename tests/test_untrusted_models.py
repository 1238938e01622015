"""Models are data, never code: weights from outside are read as safetensors only, the project's own resume
checkpoints with torch.load(weights_only=True). Each way a model comes in is tried with a pickle that would
leave a marker file if it were ever unpickled; the marker must never appear, and each refusal is a plain
message, not a traceback.

The ways in: `--model hf-hub:owner/name` for the app (a Hub repo, here a Hub cache laid out on disk and read
offline, that holds only a pickle), `--init` folders and Hub repos for training, the model folders that
`train.average` mixes in, and `--resume` checkpoints for training and averaging.
"""
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

from emotion.model import ModelLoadError, load_model
from tests import fixtures as fx

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Payload:
    """Unpickling this creates `marker`: what a pickle can do when it is loaded as code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def evil_pickle(path, marker):
    """A file that looks like a checkpoint (a dict with a state dict) and runs code when unpickled."""
    with open(path, "wb") as f:
        pickle.dump({"model": {"fc.weight": Payload(marker)}, "epoch": 0, "args": {}}, f)
    return path


def evil_torch_file(path, marker):
    """The same in torch.save's zip format, as a real `pytorch_model.bin` or `last.pt` is."""
    torch.save({"model": {"fc.weight": Payload(marker)}, "epoch": 0, "args": {}}, path)
    return path


def run(*args, env=None, timeout=600):
    try:
        return subprocess.run([sys.executable, *args], cwd=fx.ROOT, capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(args)} was still running after {timeout} s (it should have refused at once)")


def plain_refusal(r, *words):
    """A non-zero exit with a one-line reason on stderr naming `words`, and no traceback."""
    assert r.returncode != 0, r.stdout[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    for w in words:
        assert w in r.stderr, r.stderr[-3000:]


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "CODE_RAN"
    yield m
    assert not m.exists(), "a pickle was unpickled as code"


def model_folder(folder, weights: dict[str, object]):
    """A model folder with the shipped config.json and the given weight files (name -> source path or bytes)."""
    folder.mkdir(parents=True)
    shutil.copyfile(fx.ROOT / "weights" / "config.json", folder / "config.json")
    for name, src in weights.items():
        if isinstance(src, bytes):
            (folder / name).write_bytes(src)
        else:
            shutil.copyfile(src, folder / name)
    return folder


def hub_cache(root, repo: str, weights: dict[str, object]):
    """A Hugging Face Hub cache on disk holding `repo` at COMMIT with config.json and `weights`, as
    huggingface_hub lays it out; with HF_HUB_OFFLINE=1 a download of the repo reads it."""
    owner, name = repo.split("/")
    base = root / "hub" / f"models--{owner}--{name}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(COMMIT)
    model_folder(base / "snapshots" / COMMIT, weights)
    return root


def test_a_pickle_is_never_unpickled_from_a_model_folder(tmp_path, marker):
    real = fx.ROOT / "weights" / "model.safetensors"
    only_pickle = model_folder(tmp_path / "only_pickle",
                               {"pytorch_model.bin": evil_torch_file(tmp_path / "a.bin", marker)})
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        load_model(only_pickle, fallback=False)
    disguised = model_folder(tmp_path / "disguised", {"model.safetensors": evil_pickle(tmp_path / "b.pkl", marker)})
    with pytest.raises(ModelLoadError, match="Could not load the model"):
        load_model(disguised, fallback=False)
    # both a pickle and safetensors: the safetensors file is read, the pickle never opened
    both = model_folder(tmp_path / "both", {"model.safetensors": real,
                                            "pytorch_model.bin": evil_torch_file(tmp_path / "c.bin", marker)})
    m = load_model(both, fallback=False)
    shipped = load_model(fx.ROOT / "weights", fallback=False)
    assert torch.equal(m.net.fc.weight, shipped.net.fc.weight)


def test_a_hub_repo_with_only_a_pickle_is_refused_by_the_app(tmp_path, marker):
    home = hub_cache(tmp_path / "hf", "someone/pickled",
                     {"pytorch_model.bin": evil_torch_file(tmp_path / "w.bin", marker)})
    env = {k: v for k, v in os.environ.items() if k != "EMOTION_MODEL"}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")
    r = run("app.py", "--model", "hf-hub:someone/pickled", "--port", "0", env=env, timeout=240)
    plain_refusal(r, "Could not start", "missing model.safetensors")


def test_training_starts_only_from_safetensors(tmp_path, marker):
    data = fx.make_fer2013_folders(tmp_path / "fer")
    home = hub_cache(tmp_path / "hf", "someone/pickled",
                     {"pytorch_model.bin": evil_torch_file(tmp_path / "w.bin", marker)})
    folder = model_folder(tmp_path / "init", {"pytorch_model.bin": evil_torch_file(tmp_path / "x.bin", marker)})
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    base = ("-m", "train", "--dataset", "fer2013", "--data", str(data), "--epochs", "1", "--batch-size", "8",
            "--size", "32", "--threads", "1", "--no-progress", "--run-dir", str(tmp_path / "run"))
    for source in (f"local-dir:{folder}", "hf-hub:someone/pickled"):
        plain_refusal(run(*base, "--init", source, env=env), f"--init {source}", "missing model.safetensors")


def test_resume_checkpoints_are_read_as_weights_only(tmp_path, marker):
    # torch.save's zip format for training, a bare pickle for averaging: both read the same way
    ckpt = evil_torch_file(tmp_path / "last.pt", marker)
    plain_refusal(run("-m", "train", "--resume", str(ckpt), "--no-progress"), "not a checkpoint written by")
    ckpt = evil_pickle(tmp_path / "epoch1.pt", marker)
    plain_refusal(run("-m", "train.average", str(ckpt), "--out", str(tmp_path / "avg")), "not a checkpoint written by")


def test_averaging_mixes_in_safetensors_model_folders_only(tmp_path, marker):
    run_dir = tmp_path / "run"
    shutil.copytree(fx.ROOT / "weights", run_dir / "best")  # the run's own best model: a real model folder
    ckpt = tmp_path / "epoch1.pt"  # a checkpoint as the trainer writes it (tensors and plain data)
    torch.save({"model": {}, "epoch": 0, "best": {}, "history": [],
                "args": {"run_dir": str(run_dir), "dataset": "fer2013"}}, ckpt)
    folder = model_folder(tmp_path / "other", {"pytorch_model.bin": evil_torch_file(tmp_path / "w.bin", marker)})
    r = run("-m", "train.average", str(ckpt), str(folder), "--out", str(tmp_path / "avg"))
    plain_refusal(r, str(folder), "missing model.safetensors")
