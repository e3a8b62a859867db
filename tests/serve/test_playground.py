"""The playground page in a real browser (Debian's chromium + chromedriver through selenium).

Set STLM_PLAYGROUND_SCREENSHOT=PATH to keep the screenshot the test takes (docs/img/playground.png
is made this way).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="the playground test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the playground test drives chromium with selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_type_a_prompt_click_and_see_the_streamed_answer(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    prompt, seed = "The function ", 7
    browser.get(server.base_url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "model").text == "model: tiny")
    browser.find_element(By.ID, "prompt").send_keys(prompt)
    for field, value in {"max_tokens": "60", "temperature": "0.8", "top_k": "20", "seed": str(seed)}.items():
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: d.find_element(By.ID, "output").get_attribute("data-done") == "1")

    answer = browser.find_element(By.ID, "answer").get_attribute("textContent")
    assert answer == server.model.generate(prompt, max_new_tokens=60, temperature=0.8, top_k=20, seed=seed)
    assert int(browser.find_element(By.ID, "output").get_attribute("data-chunks")) > 1  # it came as a stream
    assert browser.find_element(By.ID, "status").text.startswith("done (")
    shot = tmp_path / "playground.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("STLM_PLAYGROUND_SCREENSHOT"):
        shutil.copyfile(shot, Path(os.environ["STLM_PLAYGROUND_SCREENSHOT"]))
