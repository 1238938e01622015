"""Saving and loading the model: timm Hub format, safetensors only, clear messages when a folder is broken."""
import json
import time

import numpy as np
import pytest
import timm
import torch

from emotion import model as M
from emotion.model import CLASSES, ModelLoadError, Preprocess, create_net, load_model
from train.export import save_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    net = create_net().eval()
    folder = save_model(net, tmp_path_factory.mktemp("m") / "model", Preprocess(size=48), training={})
    return net, folder


def test_folder_is_timm_hub_format(saved):
    _, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                        "results.json"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "resnet50" and cfg["num_classes"] == 7
    assert cfg["label_names"] == list(CLASSES)
    assert cfg["pretrained_cfg"]["input_size"] == [3, 48, 48]
    assert "a1_in1k" not in json.dumps(cfg)  # no ImageNet provenance on our weights


def test_loads_back_through_timm_local_dir(saved):
    net, folder = saved
    x = torch.randn(2, 3, 48, 48)
    again = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert again.pretrained_cfg["label_names"] == list(CLASSES)
    with torch.no_grad():
        ref, out = net(x), again(x)
    assert torch.allclose(ref, out, atol=2e-2, rtol=2e-2)  # weights are stored in fp16
    m = load_model(f"local-dir:{folder}", fallback=False)
    assert m.labels == CLASSES and m.prep.size == 48 and m.prep.grayscale
    probs = m.predict([np.zeros((60, 50, 3), np.uint8)])
    assert probs.shape == (1, 7) and probs.sum() == pytest.approx(1, abs=1e-5)


def test_broken_folders_give_clear_messages(saved, tmp_path):
    _, folder = saved
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "missing", fallback=False)
    broken = tmp_path / "no_weights"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    (broken / "pytorch_model.bin").write_bytes(b"pickle would go here")
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        load_model(broken, fallback=False)  # a pickle beside it is never used instead
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((folder / "config.json").read_text())
    (corrupt / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="Could not load"):
        load_model(corrupt, fallback=False)
    bad_cfg = tmp_path / "bad_cfg"
    bad_cfg.mkdir()
    (bad_cfg / "config.json").write_text("{not json")
    (bad_cfg / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="not a valid timm model config"):
        load_model(bad_cfg, fallback=False)


def test_hub_offline_fails_fast_then_falls_back(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ModelLoadError, match="hf-hub:nobody/no-such-model"):
        load_model("hf-hub:nobody/no-such-model", fallback=False)
    assert time.time() - t < 30
    m = load_model("hf-hub:nobody/no-such-model", fallback=True)  # the shipped weights/
    assert m.source == str(M.DEFAULT_WEIGHTS)


def test_env_var_picks_the_model(saved, monkeypatch):
    _, folder = saved
    monkeypatch.setenv(M.ENV_VAR, str(folder))
    assert load_model().source == str(folder)


def test_weights_split_into_small_pieces_and_join_back(saved, tmp_path):
    from safetensors.torch import load_file

    from train import shards

    _, folder = saved
    pieces = shards.split(folder, tmp_path / "pieces", max_mb=15)
    assert len(pieces) >= 3 and all(p.stat().st_size < 16 * 2**20 for p in pieces)
    joined = shards.join(tmp_path / "pieces", tmp_path / "joined")
    a, b = load_file(folder / "model.safetensors"), load_file(joined)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_model(tmp_path / "joined", fallback=False).labels == CLASSES
    pieces[1].unlink()
    with pytest.raises(Exception):
        shards.join(tmp_path / "pieces", tmp_path / "again")
