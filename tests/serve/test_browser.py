"""The page in a real browser (headless Chromium via Selenium): a text and an image generation stream their steps
to the page, the final canvas has no mask left and the final image is drawn. Screenshots are kept in the test's
tmp folder (the path is printed).

Needs Debian's `chromium` and `chromium-driver` packages and `selenium` (the test extra); `make test` installs the
browser where it can (root with apt-get). Elsewhere the tests skip, naming what is missing; with
UNIGEN_REQUIRE_BROWSER=1 (set by .ci/run) they fail instead, so CI cannot pass without running them.

    python tests/serve/test_browser.py ROOT RUN_ID OUT.png [field=value ...]   # one screenshot of the page
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

CHROMIUM = ("chromium", "chromium-browser")
TIMEOUT_S = 60


def missing() -> str:
    """What is missing to drive the browser ("" when nothing is)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not any(shutil.which(c) for c in CHROMIUM) or not shutil.which("chromedriver"):
        return "chromium / chromedriver not found (Debian: apt-get install chromium chromium-driver)"
    return ""


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault("SE_OFFLINE", "true")         # Selenium Manager must not try to download a driver
    opts = Options()
    opts.binary_location = next(shutil.which(c) for c in CHROMIUM if shutil.which(c))
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def generate(driver, base: str, run: str, at_frame: int = 0, shot: str = "", **fields) -> dict:
    """Open the page, pick `run`, fill the form, press Generate; returns the status when the stream ends (with
    `shot`, a screenshot is saved then, or as soon as `at_frame` frames have been drawn)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    driver.get(base + "/")
    WebDriverWait(driver, TIMEOUT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#run option[value="{run}"]'))
    Select(driver.find_element(By.ID, "run")).select_by_value(run)
    for name, value in fields.items():
        el = driver.find_element(By.ID, name)
        if el.tag_name == "select":
            Select(el).select_by_value(str(value))
        else:
            el.clear()
            el.send_keys(str(value))
    driver.find_element(By.ID, "go").click()
    status = driver.find_element(By.ID, "status")
    if shot and at_frame:
        WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.01).until(
            lambda d: int(status.get_attribute("data-frames") or 0) >= at_frame)
        driver.save_screenshot(shot)
    WebDriverWait(driver, TIMEOUT_S).until(lambda d: status.get_attribute("data-state") in ("done", "error"))
    if shot and not at_frame:
        driver.save_screenshot(shot)
    return {"state": status.get_attribute("data-state"), "text": status.text,
            "frames": int(status.get_attribute("data-frames"))}


@pytest.fixture(scope="module")
def driver():
    why = missing()
    if why:
        if os.environ.get("UNIGEN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required (UNIGEN_REQUIRE_BROWSER=1) but {why}")
        pytest.skip(f"browser tests skipped: {why}")
    d = browser()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def base(runs_root, serving):
    from unigen.serve.app import create_app
    with serving(create_app([runs_root])) as url:
        yield url


def test_text_generation_unmasks_live_in_the_browser(driver, base, tmp_path):
    from selenium.webdriver.common.by import By
    status = generate(driver, base, "runs/text", steps=6, n=2, prompt="The")
    shot = tmp_path / "serve-text.png"
    driver.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    assert status["state"] == "done" and status["frames"] == 6, status
    assert "6 model calls" in status["text"] and "tokens/s" in status["text"]
    samples = driver.find_elements(By.CSS_SELECTOR, "#text-canvas .sample")
    assert len(samples) == 2
    assert not driver.find_elements(By.CSS_SELECTOR, "#text-canvas .mask")          # no mask token left
    steps = {int(s.get_attribute("data-step")) for s in driver.find_elements(By.CSS_SELECTOR, "#text-canvas .tok")}
    assert 0 in steps and steps - {0} and max(steps) <= 6                            # prompt, then steps 1..6
    assert samples[0].text.startswith("The")


def test_image_generation_draws_x_t_x0_and_the_result(driver, base, tmp_path):
    status = generate(driver, base, "runs/mnist", sampler="euler", steps=5, n=4)
    shot = tmp_path / "serve-image.png"
    driver.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    assert status["state"] == "done" and status["frames"] == 5, status
    for img in ("img-xt", "img-x0", "img-final"):   # decoded by the browser, and not one flat colour
        spread = driver.execute_script("""
            const img = document.getElementById(arguments[0]);
            if (!img.complete || img.naturalWidth === 0) return -1;
            const c = document.createElement("canvas");
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
            const px = ctx.getImageData(0, 0, c.width, c.height).data;
            let lo = 255, hi = 0;
            for (let i = 0; i < px.length; i += 4) { lo = Math.min(lo, px[i]); hi = Math.max(hi, px[i]); }
            return hi - lo;""", img)
        assert spread > 0, img


def test_closing_the_tab_stops_the_generation(driver, base):
    """Leave the page mid-way through a 1000-step generation: the server's worker is freed within a step."""
    import json
    import urllib.request
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def running() -> int:
        with urllib.request.urlopen(base + "/api/status", timeout=10) as r:
            return json.loads(r.read())["running"]

    driver.get(base + "/")
    WebDriverWait(driver, TIMEOUT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, '#run option[value="runs/mnist"]'))
    Select(driver.find_element(By.ID, "run")).select_by_value("runs/mnist")
    Select(driver.find_element(By.ID, "sampler")).select_by_value("euler")
    driver.find_element(By.ID, "steps").send_keys("1000")
    driver.find_element(By.ID, "go").click()
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, TIMEOUT_S).until(lambda d: int(status.get_attribute("data-frames") or 0) >= 2)
    assert running() == 1
    driver.get("about:blank")                                  # the tab leaves the page
    WebDriverWait(driver, 15, poll_frequency=0.05).until(lambda d: running() == 0)


def test_a_bad_request_shows_its_one_line_error(driver, base):
    status = generate(driver, base, "runs/text", steps=100000)
    assert status["state"] == "error" and "error 400: steps must be in [1, 1000]" in status["text"]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import running                         # the same server helper as the tests
    from unigen.serve.app import create_app
    root, run, out, *pairs = sys.argv[1:]               # pairs: form fields, and at_frame=K for a mid-way picture
    fields = dict(p.split("=", 1) for p in pairs)
    d = browser()
    try:
        with running(create_app([root])) as url:
            result = generate(d, url, run, at_frame=int(fields.pop("at_frame", 0)), shot=out, **fields)
            print(result, "->", out)
    finally:
        d.quit()
