"""Debian's headless Chromium, driven by selenium through Debian's chromedriver: nothing downloads a browser.

Missing on a developer machine: the tests are skipped with how to get it. In CI (CI=true) they fail instead,
since .ci/run installs both packages."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
HOW_TO_GET = "install Debian's packages: sudo apt-get install chromium chromium-driver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


def require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(path) and os.access(path, os.X_OK))]
    if not missing:
        return
    message = f"headless Chromium tests need {' and '.join(missing)}: {HOW_TO_GET}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (.ci/run installs them; in CI these tests never skip)", pytrace=False)
    pytest.skip(message)


def start_browser():
    """A fresh Chromium with its own profile directory (removed by stop_browser)."""
    require_browser()
    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium's usage statistics: the network is closed anyway
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="jobprocessor-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver._jobprocessor_profile = profile
    return driver


def stop_browser(driver) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "_jobprocessor_profile", ""), ignore_errors=True)
