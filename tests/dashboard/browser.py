"""Headless Chromium from Debian's packages, driven by Selenium through Debian's chromedriver
(no browser or driver download: both paths are fixed), with the browser console readable."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

CHROMIUM = os.environ.get("XDLM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("XDLM_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
         "--window-size=1500,1000", "--hide-scrollbars")


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: scripts/setup.sh installs Debian's {package} (as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


class Browser:
    """One headless Chromium with a fresh profile; ``console()`` drains the console log."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="xdlm-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # a fixed driver path: Selenium Manager (which would look for a driver online) is not run
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(60)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def console(self) -> list[dict]:
        return self.driver.get_log("browser")

    def errors(self) -> list[str]:
        return [entry["message"] for entry in self.console() if entry["level"] == "SEVERE"]

    def wait_for(self, css: str, timeout: float = 30.0, text: str | None = None):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(self.driver, timeout)
        if text is not None:
            wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
        return wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def screenshot(self, path: Path, full_page: bool = True, height: int | None = None) -> Path:
        """A PNG of the page; ``full_page`` grows the window to the document's height first
        (``height``: to that height, for pages that scroll inside their own panes)."""
        if full_page or height:
            height = height or self.driver.execute_script("return Math.min(document.documentElement.scrollHeight, 4000)")
            self.driver.set_window_size(1500, max(1000, int(height)))
            time.sleep(0.5)  # let a React page lay itself out again
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1500, 1000)
        return path

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def pixel_spread(path: Path) -> float:
    """Standard deviation of the grey levels of a PNG (0 for a blank page)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    return float(pixels.std())
