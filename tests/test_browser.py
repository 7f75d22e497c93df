"""Notebook 03 in a real browser: JupyterLab on 127.0.0.1 at a free port, headless Chromium driven by selenium.

Runs all cells of 03_generate with the tiny test model (through its parameters), then moves the step slider
with a click and with the arrow keys and checks that the rendered canvas follows to the expected step; a
screenshot goes into the test's temp folder. Also checks that a notebook's ``.py`` source opens as a notebook
(the jupytext setting that scripts/setup.sh installs). CI (``.ci/run`` sets CI=1 and installs Debian's chromium
and chromium-driver) fails when Chromium is missing; elsewhere the test skips and says why.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import parameterized
from roberta_diffusion.paths import NOTEBOOKS

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
STEPS = 4  # the generation's steps (the slider's range is 0..STEPS)
PATIENCE = 240  # seconds to wait for the kernel or the page before failing (a loaded 2-core CPU is slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_chromium() -> None:
    if CHROMIUM and CHROMEDRIVER:
        return
    missing = "chromium" if not CHROMIUM else "chromedriver"
    if os.environ.get("CI"):
        pytest.fail(f"{missing} not found: .ci/run installs Debian's chromium and chromium-driver; the browser test "
                    "must run in CI")
    pytest.skip(f"{missing} not found: apt-get install chromium chromium-driver to run the browser test (CI does)")


@pytest.fixture
def lab(tmp_path, tiny_dirs):
    """A JupyterLab server over ``tmp_path`` holding 03_generate.ipynb with the tiny model's parameters."""
    require_chromium()
    params = {"run_name": "browser", "mlm_path": str(tiny_dirs / "mlm"), "ar_path": str(tiny_dirs / "ar"),
              "steps": STEPS, "max_len": 40, "policy_steps": 2, "confidence_gif": False, "panel_max_len": 40}
    parameterized("03_generate", params, tmp_path / "03_generate.ipynb")
    shutil.copy(NOTEBOOKS / "03_generate.py", tmp_path / "source.py")
    port, token = free_port(), "rd-browser-test"
    # private config, runtime and settings folders: the user's own JupyterLab settings must not change the test
    env = {**os.environ, "ROBERTA_DIFFUSION_RUNS": str(tmp_path / "runs"), "MPLBACKEND": "Agg",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                               f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                               f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True",
                               *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "jupyterlab.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer"
                time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture
def browser():
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)  # no sandbox: CI runs as root, where Chromium's sandbox refuses to start
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def shown_step(driver) -> int | None:
    """The step the rendered canvas shows (its ``data-step``), or None before it is there."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        found = driver.find_elements(By.CSS_SELECTOR, ".rd-canvas .rd-step")
        return int(found[0].get_attribute("data-step")) if found else None
    except StaleElementReferenceException:  # re-rendered between finding and reading it: look again
        return None


def wait_for_step(driver, step: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, PATIENCE).until(lambda d: shown_step(d) == step,
                                          f"the canvas never showed step {step} (last: {shown_step(driver)})")


def test_slider_moves_the_canvas_in_jupyterlab(lab, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, token = lab
    browser.get(f"{url}/lab/tree/03_generate.ipynb?token={token}")
    wait = WebDriverWait(browser, PATIENCE)
    wait.until(lambda d: d.execute_script(
        "const app = window.jupyterapp; const w = app && app.shell.currentWidget;"
        "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
        " && w.sessionContext.session.kernel.status === 'idle')"), "the notebook's kernel never became idle")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait_for_step(browser, STEPS)  # the panel opens on the notebook's run, at its last step
    # the cells after the panel run on, and JupyterLab scrolls to each one it runs: wait for the last one, so that
    # the page stands still before anything is clicked
    wait.until(lambda d: d.execute_script(
        "const w = window.jupyterapp.shell.currentWidget; const k = w.sessionContext.session.kernel;"
        "const prompts = [...document.querySelectorAll('.jp-InputPrompt')].map(p => p.textContent);"
        "return k.status === 'idle' && prompts.length > 0 && !prompts.some(t => t.includes('*'))"),
        "the notebook's cells never finished running")
    assert browser.find_elements(By.CSS_SELECTOR, ".rd-canvas") and len(browser.find_elements(
        By.CSS_SELECTOR, ".rd-canvas")) == 1, "one live canvas, no static copy of a step under the widget"

    slider = browser.find_element(By.CSS_SELECTOR, ".rd-step-slider .noUi-target")
    # in view first: the notebook's later outputs may have scrolled the panel away, and a click lands where it shows
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", slider)
    # a click at the left end of the track moves the slider to step 0
    width = slider.size["width"]
    ActionChains(browser).move_to_element_with_offset(slider, -width // 2 + 2, 0).click().perform()
    wait_for_step(browser, 0)
    # the arrow keys on the focused handle step through the run one step at a time
    handle = browser.find_element(By.CSS_SELECTOR, ".rd-step-slider .noUi-handle")
    handle.send_keys(Keys.ARROW_RIGHT)
    wait_for_step(browser, 1)
    handle.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    wait_for_step(browser, 3)
    handle.send_keys(Keys.ARROW_LEFT)
    wait_for_step(browser, 2)
    text = browser.find_element(By.CSS_SELECTOR, ".rd-canvas").text
    assert f"step 2/{STEPS}" in text and "masked" in text
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                           browser.find_element(By.CSS_SELECTOR, ".rd-canvas"))
    shot = tmp_path / "jupyterlab-03-slider.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000  # a real page, not a blank one

    # the notebook's py:percent source opens as a notebook (cells), not as text
    browser.get(f"{url}/lab/tree/source.py?token={token}")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell")) > 3,
               "source.py did not open as a notebook")
