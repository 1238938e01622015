import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network

import pytest  # noqa: E402

from emotion.model import DEFAULT_WEIGHTS, load_model  # noqa: E402


@pytest.fixture(scope="session")
def model():
    """The shipped model in weights/ (the app's default)."""
    return load_model(DEFAULT_WEIGHTS, fallback=False)
