"""`lottery demo` in a real browser at 1280 px: Voilà serves the notebook, headless Chromium checks the page as a
person sees it (nothing overflows its box, every slider shows its value, no empty image), presses Train, and a plot
appears. The last screenshot is left in the test's temp directory (demo.png) to look at.

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
         "--disable-dev-shm-usage", "--window-size=1280,1000")


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


def test_train_button_draws_the_plots(server, browser, tmp_path):
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
        assert not empty_images(browser), "an empty image (a broken-image icon) before anything was trained"
        sliders = browser.find_elements(By.CSS_SELECTOR, ".widget-slider")
        labels = " ".join(e.text for e in sliders)
        assert all(name in labels for name in ("init scale", "hidden layers", "width", "learning rate", "SGD steps"))
        dropdowns = browser.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")
        assert len(dropdowns) >= 4 and all(browser.execute_script("return arguments[0].selectedIndex", d) >= 0
                                           for d in dropdowns), "a dropdown shows no value"
        check_layout(browser, "before training")
        button.click()

        def finished(driver):
            text = driver.find_element(By.CSS_SELECTOR, ".lottery-demo-status").text
            return text if text.startswith(("trained", "diverged", "error")) else False

        status = wait.until(finished)
        assert status.startswith("trained:") and "test accuracy" in status, status
        WebDriverWait(browser, 60, poll_frequency=1).until(plot_images)  # the last PNG may still be decoding
        check_layout(browser, "after training")
        browser.save_screenshot(str(tmp_path / "demo.png"))
    except Exception:
        browser.save_screenshot(str(tmp_path / "demo.png"))
        print(log.read_text(errors="replace")[-5000:])
        raise


LAYOUT = """
const page = document.querySelector('.jupyter-widgets.widget-vbox') || document.body;
const boxes = [];
for (const el of page.querySelectorAll('*')) {
  const r = el.getBoundingClientRect(), style = getComputedStyle(el);
  if (!r.width || !r.height || style.visibility === 'hidden' || style.position === 'absolute') continue;
  const p = el.parentElement.getBoundingClientRect();
  if (r.right > p.right + 1 || r.left < p.left - 1)
    boxes.push(`${el.tagName}.${el.className} [${Math.round(r.left)}, ${Math.round(r.right)}] sticks out of ` +
               `${el.parentElement.tagName}.${el.parentElement.className} [${Math.round(p.left)}, ${Math.round(p.right)}]`);
  if (el.scrollWidth > el.clientWidth + 1 && style.overflowX !== 'visible')  // a scrollbar, or cut-off content
    boxes.push(`${el.tagName}.${el.className} hides ${el.scrollWidth - el.clientWidth} px of its content ` +
               `'${el.textContent.trim().slice(0, 40)}'`);
}
const readouts = [...document.querySelectorAll('.widget-slider')].map(slider => {
  const label = slider.querySelector('.widget-label').textContent.trim();
  const readout = slider.querySelector('.widget-readout');
  if (!readout) return `${label}: no readout`;
  const r = readout.getBoundingClientRect(), s = slider.getBoundingClientRect();
  const shown = getComputedStyle(readout).display !== 'none' && r.width > 0 && readout.textContent.trim() !== '';
  const inside = r.left >= s.left - 1 && r.right <= s.right + 1 && r.right <= window.innerWidth;
  const whole = readout.scrollWidth <= readout.clientWidth + 1;
  return shown && inside && whole ? null : `${label}: readout '${readout.textContent}' not fully visible`;
}).filter(x => x);
return {boxes, readouts, scroll: document.documentElement.scrollWidth, width: window.innerWidth};
"""


def check_layout(browser, when: str) -> None:
    """Nothing sticks out of its box or needs a horizontal scrollbar; every slider shows its whole value."""
    found = browser.execute_script(LAYOUT)
    assert found["width"] >= 1200, found["width"]  # the window is the width a person would use
    assert found["scroll"] <= found["width"], f"{when}: the page scrolls sideways ({found['scroll']} px)"
    assert not found["boxes"], (when, found["boxes"][:10])
    assert not found["readouts"], (when, found["readouts"])


def empty_images(browser):
    """<img> elements shown on the page with no picture in them (what a browser draws as a broken image)."""
    from selenium.webdriver.common.by import By

    return [img for img in browser.find_elements(By.CSS_SELECTOR, ".jupyter-widgets img, img.widget-image")
            if img.is_displayed() and not browser.execute_script("return arguments[0].naturalWidth", img)]


def plot_images(browser):
    """The demo's plots: <img> elements of the output area showing a decoded picture (an empty Image widget
    is an <img> too, with an empty blob that decodes to nothing)."""
    from selenium.webdriver.common.by import By

    return [img for img in browser.find_elements(By.CSS_SELECTOR, ".jupyter-widgets img, img.widget-image")
            if browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100]
