"""The real app in a real browser: `python app.py` on a free port, driven by headless Chromium (Playwright).

Needs Debian's Chromium (`apt-get install chromium chromium-driver`; .ci/run installs it) and the
`playwright` package; `playwright install` is never needed. Screenshots of every step land in
test-artifacts/browser/ for a reviewer to look at.
"""
import os
import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, expect, sync_playwright

from emotion.model import CLASSES
from tests import fixtures as fx

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = fx.ROOT / "test-artifacts" / "browser"
WAIT_MS = 90_000  # one analysis is quick, but the CPU may be shared with training
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ANY_CLASS = "|".join(CLASSES)

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")
expect.set_options(timeout=WAIT_MS)


def write_y4m(photo, path, width=640, height=480, frames=5, fps=10):
    """A short raw video (YUV 4:2:0) of `photo` letterboxed into width x height, for Chromium's fake camera.

    The photo moves 4 px to the right each frame, so that no two frames (nor their analyses) are identical.
    """
    img = Image.open(photo).convert("RGB")
    img.thumbnail((width - 4 * frames, height))

    def plane(p, step):
        p = p.reshape(height // step, step, width // step, step).mean(axis=(1, 3))
        return np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes()

    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            canvas = Image.new("RGB", (width, height))
            canvas.paste(img, ((width - img.width) // 2 - 2 * frames + 4 * i, (height - img.height) // 2))
            r, g, b = np.moveaxis(np.asarray(canvas, np.float32), -1, 0)
            y = 0.299 * r + 0.587 * g + 0.114 * b  # BT.601, full range, as "C420jpeg" says
            u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
            f.write(b"FRAME\n" + plane(y, 1) + plane(u, 2) + plane(v, 2))
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    video = write_y4m(fx.PORTRAIT, tmp_path_factory.mktemp("camera") / "astronaut.y4m")
    camera = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-video-capture={video}"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS + camera)
        yield b
        b.close()


@pytest.fixture
def page(browser, server, request):
    """A fresh tab on the app. Its console errors and uncaught exceptions collect in page.errors (and in
    test-artifacts/browser/<test>.errors.txt); a failing test leaves <test>-FAILED.png there."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = request.node.name
    for old in (f"{name}-FAILED.png", f"{name}.errors.txt"):
        (ARTIFACTS / old).unlink(missing_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.errors = []
    page.on("console", lambda m: m.type == "error" and page.errors.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: page.errors.append(f"uncaught: {e}"))
    page.goto(server)
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        page.screenshot(path=ARTIFACTS / f"{name}-FAILED.png", full_page=True)
    if page.errors:
        (ARTIFACTS / f"{name}.errors.txt").write_text("\n".join(page.errors) + "\n")
    context.close()


def block(page: Page, label: str) -> Locator:
    """The component whose label is exactly `label` (a block-label, or a block-info for radios and the like)."""
    title = page.locator("[data-testid=block-label], [data-testid=block-info]")
    title = title.filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    return page.locator(".block").filter(has=title)


def wait_loaded(img: Locator) -> tuple[int, int]:
    """Wait until the <img> shows decoded pixels; return their (width, height).

    Polls through the locator, since a streaming image swaps its src (and may swap its element) meanwhile.
    """
    img.scroll_into_view_if_needed()  # the gallery loads lazily
    deadline = time.time() + WAIT_MS / 1000
    while True:
        size = img.evaluate("i => i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null")
        if size:
            return tuple(size)
        assert time.time() < deadline, f"image never loaded: {img.get_attribute('src')}"
        img.page.wait_for_timeout(200)


def shot(page: Page, name: str):
    page.screenshot(path=ARTIFACTS / name, full_page=True)


def upload_portrait(page: Page) -> str:
    """Upload the one-face example photo; wait for the whole result; return the predicted class."""
    block(page, "Photo").locator("input[type=file]").set_input_files(fx.PORTRAIT)
    status = page.get_by_test_id("markdown").filter(has_text=re.compile(r"^\s*\d+ faces?:"))
    expect(status).to_have_text(re.compile(rf"^\s*1 face: 1\. ({ANY_CLASS}) \(\d+%\)\. Heatmaps: "))
    predicted = re.search(ANY_CLASS, status.inner_text()).group(0)
    probs = block(page, "Probabilities (largest face)")
    expect(probs.get_by_test_id("label-output-value")).to_have_text(predicted)
    expect(block(page, "Each face: crop | heatmap | probabilities | where the map lies").locator("img")).to_have_count(1)
    return predicted


def test_upload_shows_label_probabilities_and_heatmap(page):
    predicted = upload_portrait(page)

    probs = block(page, "Probabilities (largest face)")
    expect(probs.locator("meter")).to_have_count(len(CLASSES))  # one bar per class
    assert {m.get_attribute("aria-label") for m in probs.locator("meter").all()} == set(CLASSES)
    faces = block(page, "Faces found").locator("img")
    assert wait_loaded(faces)[0] > 0
    panel = block(page, "Each face: crop | heatmap | probabilities | where the map lies").locator("img")
    expect(panel).to_have_attribute("alt", re.compile(rf"^Face 1: {predicted} \d+%; heatmap for {predicted}"))
    width, height = wait_loaded(panel)
    assert width > 2 * height  # crop | heatmap | bars, side by side
    expect(block(page, "Result")).to_contain_text(re.compile(rf'"label":\s*"{predicted}"'))
    shot(page, "1-photo-analysed.png")
    assert page.errors == []


def test_why_not_another_class_redraws_the_heatmap(page):
    predicted = upload_portrait(page)
    other = "surprise" if predicted != "surprise" else "happy"
    panel = block(page, "Each face: crop | heatmap | probabilities | where the map lies").locator("img")
    before = panel.get_attribute("src")

    block(page, "Heatmap for (why not X?)").get_by_label(other, exact=True).check()

    expect(panel).to_have_attribute("alt", re.compile(rf"^Face 1: {predicted} \d+%; heatmap for {other}"))
    assert panel.get_attribute("src") != before
    assert wait_loaded(panel)[0] > 0
    expect(block(page, "Result")).to_contain_text(re.compile(rf'"explained_class":\s*"{other}"'))
    # the question changed, not the answer
    expect(block(page, "Probabilities (largest face)").get_by_test_id("label-output-value")).to_have_text(predicted)
    shot(page, f"2-heatmap-for-{other}.png")
    assert page.errors == []


def test_webcam_stream_is_labelled_live(page):
    page.get_by_role("tab", name="Webcam (live)").click()
    camera = block(page, "Camera")
    camera.get_by_text("Click to Access Webcam").click()
    video = camera.get_by_test_id("webcam-video")
    page.wait_for_function("v => v.readyState >= 2 && v.videoWidth > 0", arg=video.element_handle())
    camera.get_by_title("start recording").click()

    live = block(page, "Live: heatmap and label").locator("img")
    expect(live).to_have_count(1)
    first = live.get_attribute("src")
    assert wait_loaded(live) == (640, 480)  # the camera's frame, drawn on
    smoothed = block(page, "Probabilities (largest face, smoothed)")
    expect(smoothed.get_by_test_id("label-output-value")).to_have_text(re.compile(rf"^\s*({ANY_CLASS})\s*$"))
    expect(smoothed.locator("meter")).to_have_count(len(CLASSES))
    expect(live).not_to_have_attribute("src", first)  # it keeps streaming, frame after frame
    wait_loaded(live)
    shot(page, "3-webcam-live.png")

    camera.get_by_title("stop recording").click()
    assert page.errors == []
