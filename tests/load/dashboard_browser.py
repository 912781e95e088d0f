"""Drive the Locust dashboard in headless Chromium: start a run, read the SLO tab live, stop it,
read the final rows, screenshot both into the run's report folder. Prints what it saw as JSON.

Run as a script (`python tests/load/dashboard_browser.py URL CHROMIUM PROFILE_DIR`) so that
Playwright's own event loop never meets the gevent monkey-patching Locust does in the test
process. Uses the given Chromium binary: Playwright downloads no browser.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 120_000  # generous: a loaded shared machine renders slowly


def slo_rows(page: Page) -> dict[str, list[str]]:
    """The SLO table as {figure: [value, target, verdict]}, read in one go (the UI re-renders
    it every 2 s: cell by cell, one read could mix two renders)."""
    cells = page.locator("table tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(c => c.innerText.trim()))"
    )
    return {row[0]: row[1:] for row in cells if len(row) == 4}


def wait_rows(page: Page, ready) -> dict[str, list[str]]:
    """Poll the rendered table until ready(rows) (the UI re-renders every 2 s poll)."""
    for _ in range(TIMEOUT_MS // 250):
        rows = slo_rows(page)
        if rows and ready(rows):
            return rows
        page.wait_for_timeout(250)
    raise TimeoutError(f"SLO table never got ready; last rows: {slo_rows(page)}")


def main(url: str, chromium: str, profile: str) -> int:
    seen: dict[str, object] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        # The start form, filled with the defaults `make loadtest-ui` passed to Locust.
        page.get_by_role("button", name=re.compile(r"^start$", re.I)).click()
        page.get_by_role("tab", name="SLO").click()
        before = wait_rows(page, lambda r: "latency max" in r)
        seen["targets"] = {figure: cells[1] for figure, cells in before.items()}

        def running(rows: dict[str, list[str]]) -> bool:
            done = rows.get("completed requests", ["0"])[0]
            return "(live)" in rows["state"][0] and int(done) >= 50

        live = wait_rows(page, running)
        seen["live"] = live
        live_png = page.screenshot(full_page=True)
        page.get_by_role("button", name=re.compile(r"^stop$", re.I)).click()
        final = wait_rows(page, lambda r: r["state"][0] == "stopped" and "report" in r)
        seen["final"] = final
        report = Path(final["report"][0])  # the run's report folder, now complete
        (report / "dashboard-live.png").write_bytes(live_png)
        page.screenshot(path=str(report / "dashboard-final.png"), full_page=True)
        page.get_by_role("tab", name="Download Data").click()
        link = page.get_by_role("link", name="Download SLO CSV")
        seen["csv_href"] = link.get_attribute("href")
        browser.close()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
