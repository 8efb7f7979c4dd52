"""`lottery demo` in a real browser: Voilà serves the notebook, headless Chromium presses Train, a plot appears.

Runs wherever Debian's chromium and chromedriver are installed (CI installs them: .ci/run); skipped only without.
Timeouts are generous: Voilà starts a kernel and runs the notebook, and CI machines may be small and busy.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                 reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                        "chromium-driver)")]
ROOT = Path(__file__).resolve().parent.parent
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1200")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"lottery demo exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"nothing served at {url} after {timeout:.0f} s")


@pytest.fixture
def server(tmp_path):
    """`python -m lottery demo --port P` in its own process group (Voilà's kernels die with it)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "MPLBACKEND": "Agg"}
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "lottery", "demo", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", proc, timeout=180)
        yield f"http://127.0.0.1:{port}/", tmp_path / "server.log"
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        log.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:  # an empty profile: nothing from earlier runs
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def test_train_button_draws_the_plots(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, log = server
    browser.get(url)
    wait = WebDriverWait(browser, 300, poll_frequency=1)

    def train_button(driver):
        buttons = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Train"]
        return buttons[0] if buttons and buttons[0].is_enabled() else False

    try:
        button = wait.until(train_button)  # the notebook ran in the kernel and its widgets rendered
        assert not plot_images(browser), "a plot before anything was trained"
        steps = next(e for e in browser.find_elements(By.CSS_SELECTOR, ".widget-slider")
                     if "SGD steps" in e.text)
        assert steps  # the controls rendered too
        button.click()

        def finished(driver):
            text = driver.find_element(By.CSS_SELECTOR, ".lottery-demo-status").text
            return text if text.startswith(("trained", "diverged", "error")) else False

        status = wait.until(finished)
        assert status.startswith("trained:") and "test accuracy" in status, status
        WebDriverWait(browser, 60, poll_frequency=1).until(plot_images)  # the last PNG may still be decoding
    except Exception:
        print(log.read_text(errors="replace")[-5000:])
        raise


def plot_images(browser):
    """The demo's plots: <img> elements of the output area showing a decoded picture (an empty Image widget
    is an <img> too, with an empty blob that decodes to nothing)."""
    from selenium.webdriver.common.by import By

    return [img for img in browser.find_elements(By.CSS_SELECTOR, ".jupyter-widgets img, img.widget-image")
            if browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100]
