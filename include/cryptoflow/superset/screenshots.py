"""Log in to Superset with headless Chromium and screenshot dashboards (what a user would see).

Runs with Superset's interpreter (.venv/superset/bin/python: Selenium is one of Superset's own
dependencies) as a script, so it imports nothing from cryptoflow:

    SUPERSET_PASSWORD=... .venv/superset/bin/python include/cryptoflow/superset/screenshots.py \
        URL OUT_DIR SLUG [SLUG...]

Superset's own screenshot endpoints need Celery workers, which this stack doesn't run. For each
slug it writes OUT_DIR/<slug>.png and prints one JSON line: what the page showed (charts, how many
rendered a canvas/SVG/table, error messages, the candlestick's SVG rectangles).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

# What the page tells after rendering: evaluated in the browser.
PROBE = """
// Markdown blocks sit in the same holders as charts: keep the holders of a chart.
const charts = Array.from(document.querySelectorAll('.dashboard-component-chart-holder'))
  .filter(c => c.querySelector('[data-test-chart-id]')
               || !(c.querySelector('.dashboard-markdown') || c.closest('.dashboard-markdown')));
const rendered = charts.filter(c => c.querySelector('canvas, svg, table'));
const loading = document.querySelectorAll('.loading, [aria-label="Loading"]').length;
const errors = Array.from(document.querySelectorAll('.alert-danger, .ant-alert-error, [role="alert"]'))
  .map(e => e.innerText.trim()).filter(t => t);
const empty = charts.filter(c => /No results were returned|No data/.test(c.innerText)).length;
return {charts: charts.length, rendered: rendered.length, loading: loading, errors: errors, empty: empty,
        candle_rects: document.querySelectorAll('svg rect[fill="#26a69a"], svg rect[fill="#ef5350"]').length,
        title: document.title};
"""


def driver(width: int = 1600, height: int = 1500) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
    ):
        opts.add_argument(arg)
    opts.binary_location = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
    browser = webdriver.Chrome(
        service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts
    )
    browser.set_page_load_timeout(120)  # a page that never loads is a timeout, not a hang
    return browser


def logged_in(browser: webdriver.Chrome, url: str) -> bool:
    """Whether the browser's session is a logged-in one: Superset's /api/v1/me/ answers 401 otherwise."""
    try:
        browser.get(f"{url}/api/v1/me/")
    except TimeoutException:
        return False
    return '"username"' in browser.page_source


def login(
    browser: webdriver.Chrome, url: str, username: str, password: str, budget: float = 300.0
) -> None:
    """Log in through the form, retrying until `budget` seconds have passed.

    Under load the first page after the form (the welcome page) can take longer than any single
    wait, and a form typed into before the page finished loading can lose its text: so each try
    waits for the page to be complete, and a try that times out asks the API whether the session
    is in fact logged in before it tries again.
    """
    deadline = time.monotonic() + budget
    attempt, said = 0, ""
    while True:
        attempt += 1
        try:
            browser.get(f"{url}/login/")
            WebDriverWait(browser, 90).until(ec.presence_of_element_located((By.ID, "username")))
            WebDriverWait(browser, 30).until(
                lambda b: b.execute_script("return document.readyState") == "complete"
            )
            for field, value in (("username", username), ("password", password)):
                element = browser.find_element(By.ID, field)
                element.clear()
                element.send_keys(value)
            browser.find_element(By.ID, "password").submit()
            WebDriverWait(browser, 90).until(lambda b: "/login" not in b.current_url)
            return
        except TimeoutException:
            try:  # a page that never loaded has no body to quote: that must not end the retries
                said = " ".join(browser.find_element(By.TAG_NAME, "body").text.split())[:500]
            except WebDriverException as exc:
                said = f"(no page: {exc.msg})"
            if logged_in(browser, url):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"could not log in to {url} as {username} in {attempt} tries; "
                f"the login page said: {said!r}"
            )
        print(f"login try {attempt} timed out; trying again", file=sys.stderr, flush=True)


def shoot(browser: webdriver.Chrome, url: str, slug: str, out: Path, settle: float = 60.0) -> dict:
    browser.get(f"{url}/superset/dashboard/{slug}/?standalone=1")
    WebDriverWait(browser, 60).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, ".dashboard-component-chart-holder"))
    )
    began = time.monotonic()
    state = browser.execute_script(PROBE)
    # Wait until every chart drew something (or showed its message) and nothing is loading.
    while time.monotonic() - began < settle:
        state = browser.execute_script(PROBE)
        if (
            state["loading"] == 0
            and state["rendered"] + state["empty"] + len(state["errors"]) >= state["charts"]
        ):
            break
        time.sleep(1)
    time.sleep(2)  # animations (ECharts draws in ~1 s)
    # The page is taller than the window: grow the window to the document before the shot.
    full = browser.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
    )
    browser.set_window_size(browser.get_window_size()["width"], min(max(full, 900), 4000))
    time.sleep(1)
    state = browser.execute_script(PROBE)
    path = out / f"{slug}.png"
    browser.save_screenshot(str(path))
    return {"slug": slug, "png": str(path), "seconds": round(time.monotonic() - began, 1), **state}


def main(argv: list[str]) -> int:
    url, out, slugs = argv[0].rstrip("/"), Path(argv[1]), argv[2:]
    out.mkdir(parents=True, exist_ok=True)
    browser = driver()
    try:
        login(
            browser, url, os.environ.get("SUPERSET_USER", "admin"), os.environ["SUPERSET_PASSWORD"]
        )
        for slug in slugs:
            print(json.dumps(shoot(browser, url, slug, out)), flush=True)
    finally:
        browser.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
