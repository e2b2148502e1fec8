"""A real headless Chromium, driven through chromedriver with Selenium.

Debian's ``chromium`` and ``chromium-driver`` packages are used as installed (``make test``
installs them where it can); nothing is downloaded at run time — Selenium is given the driver's
path, so its driver manager never runs.  Each browser gets a fresh profile directory and every
background feature that could reach the network is switched off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER_PATHS = ("/usr/bin/chromedriver",)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def _first(paths: tuple[str, ...], name: str) -> str | None:
    for path in paths:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def missing_reason() -> str | None:
    """Why a browser test cannot run here (one line), or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if _first(CHROMIUM_PATHS, "chromium") is None:
        return "no chromium (Debian: apt-get install chromium chromium-driver)"
    if _first(CHROMEDRIVER_PATHS, "chromedriver") is None:
        return "no chromedriver (Debian: apt-get install chromium-driver)"
    return None


@contextlib.contextmanager
def chromium(width: int = 1500, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver with console logging on; closed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    profile = tempfile.mkdtemp(prefix="wstrace-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM_PATHS, "chromium") or "chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=_first(CHROMEDRIVER_PATHS, "chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_page(driver: Any, path: Path, timeout: float = 30) -> None:
    """Load a local HTML file and wait until the viewer says it has rendered."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.body && document.body.dataset.ready === '1'")
    )


def console_problems(driver: Any) -> list[str]:
    """Console messages at warning level or above since the last call (CSP reports included)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry.get("level") in ("SEVERE", "WARNING")
    ]
