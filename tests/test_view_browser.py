"""The viewer's page in a real browser: Playwright driving the system's Chromium (Debian's).

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (or ``$PF_CHROMIUM``); CI
(``.ci/run``) installs Debian's ``chromium`` when it is missing. Skips without Playwright or a
Chromium binary.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from _view_fixture import make_output_folder, running

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("PF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

#: Where the README's screenshot is written when set (``PF_VIEW_SCREENSHOT=docs/view.png``).
SCREENSHOT = os.environ.get("PF_VIEW_SCREENSHOT")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    out = make_output_folder(tmp_path_factory.mktemp("view-browser"))
    with running(out, cache_bytes=32 << 20) as s:
        yield s


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        pg = browser.new_page(viewport={"width": 1280, "height": 720})
        pg.goto(server.url)
        yield pg
        browser.close()


def pixels(page) -> np.ndarray:
    """The viewer's rendered pixels (RGB) as an array."""
    import cv2

    png = page.locator("#viewer").screenshot()
    img = cv2.imdecode(np.frombuffer(io.BytesIO(png).getvalue(), np.uint8), cv2.IMREAD_COLOR)
    return img[..., ::-1].astype(np.int16)


def wait_drawn(page) -> None:
    """Until OpenSeadragon has every visible tile of every layer drawn."""
    page.wait_for_function(
        "() => viewer.world.getItemCount() > 0 && "
        "[...Array(viewer.world.getItemCount()).keys()].every(i => viewer.world.getItemAt(i).getFullyLoaded())",
        timeout=30000,
    )
    page.wait_for_timeout(600)  # the zoom animation (0.3 s) settles


def test_worklist_renders(page) -> None:
    rows = page.locator("#worklist tbody tr")
    rows.first.wait_for()
    assert rows.count() == 3
    names = [rows.nth(i).locator(".name").inner_text() for i in range(3)]
    assert names[1:] == ["cancer1.tif", "benign1.tif"] and names[0] == "broken.svs"
    assert "failed" in (rows.nth(0).get_attribute("class") or "")
    assert rows.nth(1).locator("img").count() == 1


def test_click_opens_slide_and_overlay_changes_pixels(page) -> None:
    page.locator("#worklist tbody tr", has_text="cancer1.tif").click()
    page.wait_for_function("() => viewer.world.getItemCount() === 2", timeout=30000)
    wait_drawn(page)
    assert page.locator("#title").inner_text() == "cancer1.tif"
    assert "cancer" in page.locator("#legend").inner_text()
    with_layer = pixels(page)
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT)
    page.locator("#overlay-toggle").uncheck()
    wait_drawn(page)
    without = pixels(page)
    changed = np.abs(with_layer - without).max(axis=2) > 8
    assert changed.mean() > 0.01  # the cancer tiles lose their tint
    page.locator("#overlay-toggle").check()
    wait_drawn(page)
    assert np.abs(pixels(page) - with_layer).max(axis=2).mean() < 1  # and get it back
    page.locator("#opacity").fill("100")
    wait_drawn(page)
    stronger = pixels(page)
    more = np.abs(stronger - without).max(axis=2)
    assert (more > 8).mean() > changed.mean() * 0.9 and more.sum() > np.abs(
        with_layer - without
    ).max(axis=2).sum()
    page.locator("#opacity").fill("50")


def test_keyboard_moves_to_next_slide(page) -> None:
    page.locator("body").click(position={"x": 5, "y": 700})
    page.keyboard.press("n")
    page.wait_for_function(
        "() => document.getElementById('title').textContent === 'benign1.tif'", timeout=10000
    )
    assert "current" in page.locator("#worklist tbody tr", has_text="benign1.tif").get_attribute(
        "class"
    )
    page.keyboard.press("p")
    page.wait_for_function(
        "() => document.getElementById('title').textContent === 'cancer1.tif'", timeout=10000
    )


def test_review_button_marks_the_slide(page, server) -> None:
    page.locator("#note").fill("two foci, agree")
    page.locator("#review").click()
    page.wait_for_function(
        "() => document.getElementById('review').textContent === 'Unmark reviewed'"
    )
    review = server.catalog.review.read_text()
    assert 'cancer1.tif,"two foci, agree"' in review or "cancer1.tif,two foci" in review
    assert (
        page.locator("#worklist tbody tr", has_text="cancer1.tif").locator(".mark").inner_text()
        == "✓"
    )


def test_graded_mode_probe_and_contours(page) -> None:
    page.locator("#worklist tbody tr", has_text="cancer1.tif").click()
    page.wait_for_function("() => viewer.world.getItemCount() === 2", timeout=30000)
    wait_drawn(page)
    classed = pixels(page)
    page.locator("#mode").select_option("graded")
    page.wait_for_function("() => viewer.world.getItemCount() === 2", timeout=30000)
    wait_drawn(page)
    assert (np.abs(pixels(page) - classed).max(axis=2) > 8).mean() > 0.01  # benign tiles tinted too
    box = page.locator("#viewer").bounding_box()
    spots = [(dx, dy) for dy in (0.35, 0.4, 0.7, 0.75) for dx in (0.3, 0.5, 0.7)]
    for dx, dy in spots:  # until the pointer is over a scored tile
        page.mouse.move(box["x"] + box["width"] * dx, box["y"] + box["height"] * dy)
        page.wait_for_timeout(250)
        if "cancer" in page.locator("#probe").inner_text():
            break
    assert "benign" in page.locator("#probe").inner_text()
    page.locator("#contours").check()
    page.wait_for_timeout(800)
    drawn = page.evaluate(
        "() => { const c = document.getElementById('contour-layer');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }"
    )
    assert drawn > 100
    page.locator("#contours").uncheck()
    page.locator("#mode").select_option("class")
