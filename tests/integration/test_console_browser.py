"""The web console in a real headless Chromium (Debian's, unpacked by `make
chromium`) driven by Selenium against the gateway and the real services: a
sentence finds the cat photo with its thumbnail, a dropped image finds similar
images, a bad token gets a clear message. With CONSOLE_SCREENSHOT=docs/console.png
it saves the README's screenshot there (else into the test's temporary folder)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from mmsearch.dev.chromium import CACHE
from tests.conftest import DEV_TOKEN, ROOT, SAMPLES
from tests.integration.gateway_corpus import GatewayCorpus

pytestmark = pytest.mark.integration
BROWSER, DRIVER = CACHE / "bin" / "chromium", CACHE / "bin" / "chromedriver"
# Drops a file on the drop zone as a user's drag and drop does: a DataTransfer holding
# the File a (hidden) file input was given by WebDriver.
DROP = """
const input = document.createElement("input");
input.type = "file"; input.id = "test-drop-source"; input.style.display = "none";
document.body.appendChild(input);
"""
DISPATCH = """
const transfer = new DataTransfer();
transfer.items.add(document.getElementById("test-drop-source").files[0]);
for (const type of ["dragenter", "dragover", "drop"]) {
  document.getElementById("drop").dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true}));
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (BROWSER.exists() and DRIVER.exists()):
        pytest.fail("headless Chromium is missing: run `make chromium` (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(BROWSER)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(DRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait(driver: WebDriver, timeout_s: float = 60) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, timeout_s)


def enter_token(driver: WebDriver, token: str, *, accepted: bool = True) -> None:
    dialog = driver.find_element(By.ID, "token-dialog")
    if not dialog.get_attribute("open"):
        driver.find_element(By.ID, "tab-token").send_keys(Keys.ENTER)  # keyboard, not a click
    field = wait(driver).until(ec.visibility_of_element_located((By.ID, "token-input")))
    field.clear()
    field.send_keys(token, Keys.ENTER)
    if accepted:
        wait(driver).until(lambda d: not d.find_element(By.ID, "token-dialog").get_attribute("open"))


def first_hit(driver: WebDriver) -> str:
    # Read in one script: the grid is re-rendered while results arrive.
    first = driver.execute_script(
        "const h = document.querySelector('#results li.hit'); return h && h.dataset.item;"
    )
    return str(first or "")


async def test_console_search_drop_and_bad_token(
    gateway_corpus: GatewayCorpus, browser: WebDriver, tmp_path: Path
) -> None:
    screenshot = (
        ROOT / os.environ["CONSOLE_SCREENSHOT"] if "CONSOLE_SCREENSHOT" in os.environ else tmp_path / "c.png"
    )
    await asyncio.to_thread(_drive, gateway_corpus.url, browser, screenshot)
    assert screenshot.stat().st_size > 10_000


def _drive(url: str, driver: WebDriver, screenshot: Path) -> None:
    driver.get(url + "/")
    assert "token" not in driver.current_url
    # No token yet: the console asks for one.
    wait(driver).until(lambda d: d.find_element(By.ID, "token-dialog").get_attribute("open"))
    enter_token(driver, DEV_TOKEN)
    assert DEV_TOKEN not in driver.current_url  # never in the URL

    query = driver.find_element(By.ID, "query")
    query.send_keys("a photo of a cat", Keys.ENTER)
    try:
        wait(driver).until(lambda d: first_hit(d) == "chelsea.png")
    except Exception:
        state = [driver.find_element(By.ID, i).text for i in ("message", "summary", "results")]
        raise AssertionError(
            f"the cat photo is not first: {state}, logs {driver.get_log('browser')}"
        ) from None
    thumb = driver.find_element(By.CSS_SELECTOR, "#results li.hit:first-child img.thumb")
    wait(driver).until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb)
    )
    summary = driver.find_element(By.ID, "summary").text
    assert "minilm@1" in summary and "total" in summary
    assert driver.find_element(
        By.CSS_SELECTOR, "#results li.hit:first-child .scores"
    ).text  # per-stage scores
    driver.save_screenshot(str(screenshot))

    # The item view opens from the keyboard.
    driver.find_element(By.CSS_SELECTOR, "#results li.hit:first-child button.open").send_keys(Keys.ENTER)
    wait(driver).until(lambda d: "photo" in d.find_element(By.ID, "item-body").text)
    driver.find_element(By.CSS_SELECTOR, "#item-dialog button").send_keys(Keys.ENTER)

    # Drop a photo: similar images come back, the photo itself first.
    driver.execute_script(DROP)
    driver.find_element(By.ID, "test-drop-source").send_keys(str(SAMPLES / "images" / "coffee.png"))
    driver.execute_script(DISPATCH)
    wait(driver).until(lambda d: first_hit(d) == "coffee.png")
    images = driver.find_elements(By.CSS_SELECTOR, "#results li.hit img.thumb")
    assert len(images) >= 3

    # Ingest status: lag, paused or not, dead letters.
    driver.find_element(By.ID, "tab-ingest").send_keys(Keys.ENTER)
    wait(driver).until(lambda d: "Consuming" in d.find_element(By.ID, "status").text)
    wait(driver).until(lambda d: "REASON_CORRUPT_MEDIA" in d.find_element(By.ID, "dead-letters").text)
    assert "broken-tenant-b.png" not in driver.find_element(By.ID, "dead-letters").text
    driver.find_element(By.ID, "tab-search").send_keys(Keys.ENTER)

    # A bad token: the console says so at once, and asks for a token again.
    enter_token(driver, "not-a-real-token", accepted=False)
    wait(driver).until(lambda d: d.find_element(By.ID, "message").is_displayed())
    message = driver.find_element(By.ID, "message").text
    assert "token was not accepted" in message and "invalid token" in message, message
    wait(driver).until(lambda d: d.find_element(By.ID, "token-dialog").get_attribute("open"))
    script_errors = [e for e in driver.get_log("browser") if e.get("source") == "javascript"]
    assert not script_errors, script_errors
