"""A person's view: headless Chromium (Debian's) uploads a slice and sees the overlay and the tables."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import EXAMPLE, REPO, synthetic_ras

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.slow  # a server and a browser


ARTIFACTS = REPO / "test-artifacts"


FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(server):
    if not CHROMIUM.exists():
        message = "Debian's chromium is needed for browser tests: apt-get install chromium"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        yield page
        browser.close()


def test_upload_segment_and_see_the_results(page):
    page.get_by_text("Research use only").wait_for()
    page.locator("input[type=file]").first.set_input_files(str(EXAMPLE))
    page.get_by_role("button", name="Segment", exact=True).click()
    page.get_by_text("lesion(s); hemangioma area").wait_for(timeout=60_000)
    overlay = page.locator("img[alt]").first if page.locator("img[alt]").count() else page.locator("img").first
    overlay.wait_for()
    assert page.get_by_text("largest diameter").first.is_visible()  # the lesion table
    assert page.get_by_text("simulated").first.is_visible()
    assert page.get_by_text("Dice (pooled)").first.is_visible()  # the model's per-plane table
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
    assert (ARTIFACTS / "app.png").stat().st_size > 20_000


def test_a_volume_upload_brings_the_slice_slider(page, tmp_path):
    image, _ = synthetic_ras()
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "volume.nii.gz")
    page.reload()
    page.get_by_text("Research use only").wait_for()  # the app has rendered: an upload now reaches its handlers
    assert not page.get_by_text("Volume slice").is_visible()
    page.locator("input[type=file]").first.set_input_files(str(tmp_path / "volume.nii.gz"))
    page.get_by_text("Volume slice").wait_for(timeout=30_000)
    page.get_by_role("button", name="Segment", exact=True).click()
    page.get_by_text("plane sagittal").wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "app-volume.png"), full_page=True)
