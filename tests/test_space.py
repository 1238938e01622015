"""The Hugging Face Space: the deploy's plan, its token handling, and the app started from the Space's own
file set the way a Space starts it (no weights/ folder, the model named by EMOTION_MODEL)."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml
from gradio_client import Client, handle_file

from emotion.model import CLASSES
from tests import fixtures as fx
from train.space import build_space

FORBIDDEN = ("weights/", "tests/", "tools/", "train/", ".ci/", "runs/", "eval/", "audit/", ".venv/", ".git")


def run_push(*args, env_extra=None, drop=("HF_TOKEN", "HF_TOKEN_PATH")):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "train.push", *args], cwd=fx.ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_dry_run_prints_the_plan_and_nothing_else():
    r = run_push("--space", "someone/emotion-demo", "--model-repo", "someone/emotion-model", "--dry-run")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)  # exactly one JSON object on stdout
    assert set(plan) == {"repo", "repo_type", "files", "variables"}
    assert plan["repo"] == "someone/emotion-demo" and plan["repo_type"] == "space"
    assert plan["variables"] == {"EMOTION_MODEL": "hf-hub:someone/emotion-model"}
    files = plan["files"]
    for needed in ("app.py", "README.md", "requirements.txt", "emotion/__init__.py", "emotion/model.py",
                   "emotion/service.py", "examples/astronaut.jpg", "examples/two_faces.jpg"):
        assert needed in files
    assert not [f for f in files if f.startswith(FORBIDDEN) or f.endswith((".safetensors", ".pt", ".pyc"))]
    assert not [f for f in files if f.split("/")[-1] in ("benchmark.py", "loadtest.py")]


def test_the_model_goes_up_with_its_face_prior_and_never_a_pickle():
    """The model repo gets what loading it needs, the honesty check's mean maps of this very model included
    (emotion/faithfulness.py reads them from the model's folder), and no pickle."""
    r = run_push("--repo", "someone/emotion-model", "--weights", "weights", "--dry-run")
    assert r.returncode == 0, r.stderr
    line = next(t for t in r.stdout.splitlines() if t.startswith("will upload: "))
    files = line.removeprefix("will upload: ").split("; skipping")[0].split(", ")
    assert {"config.json", "model.safetensors", "face_prior.npz", "README.md"} <= set(files)
    assert not [f for f in files if f.endswith((".pt", ".bin", ".pth", ".pkl", ".ckpt"))]


def test_space_readme_front_matter(tmp_path):
    build_space(tmp_path / "space", "someone/emotion-model")
    meta = front_matter((tmp_path / "space" / "README.md").read_text())
    requirements = (fx.ROOT / "requirements.txt").read_text()
    assert f"gradio=={meta['sdk_version']}\n" in requirements
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["python_version"] == "3.11"  # yuface has no wheels past 3.11
    assert meta["models"] == ["someone/emotion-model"]
    assert meta["preload_from_hub"] == ["someone/emotion-model config.json,model.safetensors"]
    # every file the card links to or shows travels with it; the model card's link goes to the model's page
    card = (tmp_path / "space" / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", card):
        if not target.startswith(("http://", "https://")):
            assert (tmp_path / "space" / target).is_file(), target
    assert "](https://huggingface.co/someone/emotion-model)" in card and "](weights/README.md)" not in card
    # the project's own README declares the same SDK and Python for anyone who copies it
    own = front_matter((fx.ROOT / "README.md").read_text())
    assert own["sdk_version"] == meta["sdk_version"] and own["python_version"] == "3.11"


def test_token_comes_from_the_hub_login_when_hf_token_is_unset(tmp_path):
    home = tmp_path / "hf"
    home.mkdir()
    (home / "token").write_text("hf_not_a_real_token\n")  # where `hf auth login` stores it
    args = ("--space", "someone/emotion-demo", "--model-repo", "someone/emotion-model")
    r = run_push(*args, env_extra={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert r.returncode != 0
    assert "Could not reach the Hugging Face Hub with the token stored by `hf auth login`" in r.stderr, r.stderr
    assert "nothing was uploaded" in r.stderr and "Traceback" not in r.stderr

    (home / "token").unlink()
    r = run_push(*args, env_extra={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert r.returncode != 0 and r.stderr.strip() == (
        "No Hugging Face token found: run `hf auth login` (or set HF_TOKEN) with a token that has write access.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """`python app.py` in a folder holding only the Space's files, started as a Space starts it."""
    tmp = tmp_path_factory.mktemp("space")
    model_repo = tmp / "model-repo"  # stands in for the Hub model repo the Space preloads
    model_repo.mkdir()
    for name in ("config.json", "model.safetensors", "face_prior.npz"):  # what train.push uploads
        shutil.copyfile(fx.ROOT / "weights" / name, model_repo / name)
    folder = tmp / "space"
    build_space(folder, "someone/emotion-model")
    assert not (folder / "weights").exists()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN", "EMOTION_MODEL")}
    env.update(EMOTION_MODEL=f"local-dir:{model_repo}", GRADIO_SERVER_NAME="0.0.0.0", GRADIO_SERVER_PORT=str(port),
               SPACE_ID="someone/emotion-demo", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               EMOTION_ENGINE="auto")  # as a Space runs: ONNX Runtime, like the `server` it is compared with
    log = tmp / "app.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while True:
        if proc.poll() is not None:
            pytest.fail("app.py exited in the Space's folder:\n" + log.read_text())
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail("app.py did not start in the Space's folder:\n" + log.read_text())
        time.sleep(1)
    yield {"url": url, "folder": folder, "model_repo": model_repo, "log": log}
    proc.terminate()
    proc.wait(10)


def test_app_runs_from_the_space_files_alone(space, server):
    photo = handle_file(str(space["folder"] / "examples" / "two_faces.jpg"))
    r = Client(space["url"], verbose=False).predict(photo, "Grad-CAM", "layer3", "predicted class", False,
                                                    api_name="/predict")
    assert len(r["faces"]) == 2 and r["faces"][0]["label"] in CLASSES
    assert set(r["faces"][0]["probabilities"]) == set(CLASSES)
    # the same answer as the app run from the project (same model): nothing the app reads is missing there
    here = Client(server, verbose=False).predict(photo, "Grad-CAM", "layer3", "predicted class", False,
                                                 api_name="/predict")
    named = r.pop("model", None), here.pop("model", None)  # which model answered, where the answer says it
    assert r == here
    if named[0] is not None:
        assert named[0]["source"] == str(space["model_repo"]) and named[1]["source"] != named[0]["source"]
    assert f"model {space['model_repo']}" in space["log"].read_text()  # the model EMOTION_MODEL named
    # what app.py reads at start: the README's API section and the example photos, from the Space's folder
    config = httpx.get(space["url"] + "config", timeout=30).json()
    text = json.dumps(config)
    assert 'api_name=\\"/predict\\"' in text
    assert "astronaut.jpg" in text and "two_faces.jpg" in text
