"""The querystash debug-toolbar panel in a real browser, on the example
project: ``manage.py runserver`` serves example/ (with the toolbar:
``QUERYSTASH_EXAMPLE_TOOLBAR=1``) on a SQLite file of this test's own;
headless Chromium opens the shop page, opens the panel the way a person
does (a click on its entry in the toolbar) and the test reads its rows.

Debian's ``chromium`` and ``chromium-driver`` through selenium, set up as in
tests/test_docs_site.py (nothing downloaded at run time). The screenshot in
docs/observing.md is taken here: ``QUERYSTASH_UPDATE_SCREENSHOTS=1`` copies
it to docs/img/debug-toolbar-panel.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_docs_site import CHROMEDRIVER, CHROMIUM, IN_CI, headless_chrome

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example"
SCREENSHOT = ROOT / "docs" / "img" / "debug-toolbar-panel.png"

# The example runs on its own SQLite file whatever the suite's database: the
# PostgreSQL runs would repeat the SQLite ones exactly.
pytestmark = pytest.mark.skipif(
    os.environ.get("QUERYSTASH_TEST_DB", "sqlite") != "sqlite",
    reason="the example project runs on SQLite whatever QUERYSTASH_TEST_DB says",
)

#: the panel's rows, as (outcome, reason), read in the toolbar's shadow DOM
ROWS = """
const root = document.getElementById('djDebugRoot');
const dom = root && root.shadowRoot ? root.shadowRoot : document;
return [...dom.querySelectorAll('#QuerystashPanel tr.qs-row')]
    .map(tr => [tr.dataset.outcome, tr.dataset.reason,
                tr.querySelector('.qs-reason').textContent.trim()]);
"""

OPEN_PANEL = """
const root = document.getElementById('djDebugRoot');
const dom = root && root.shadowRoot ? root.shadowRoot : document;
const link = dom.querySelector('#djDebugPanelList a.QuerystashPanel');
if (!link) return null;
link.click();
return link.textContent.trim().replace(/\\s+/g, ' ');
"""

INVALIDATIONS = """
const root = document.getElementById('djDebugRoot');
const dom = root && root.shadowRoot ? root.shadowRoot : document;
return [...dom.querySelectorAll('#QuerystashPanel .qs-invalidations li')]
    .map(li => li.textContent.trim());
"""


def _missing() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium / chromium-driver are not installed (scripts/test installs them)"
    try:
        import debug_toolbar  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (a dev dependency)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = _missing()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("example")
    env = {**os.environ, "QUERYSTASH_EXAMPLE_DB": str(tmp / "db.sqlite3"),
           "QUERYSTASH_EXAMPLE_TOOLBAR": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the suite's: manage.py sets the example's
    manage = [sys.executable, "manage.py"]
    for args in (["migrate", "-v0"], ["seed", "--products", "200", "--reviews", "300"]):
        subprocess.run([*manage, *args], cwd=EXAMPLE, env=env, check=True,
                       capture_output=True, timeout=120)
    port = _free_port()
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
                            cwd=EXAMPLE, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/page/", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp / "server.log").read_text()) from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser(server):
    driver = headless_chrome()
    yield driver
    driver.quit()


def panel_rows(browser, url: str) -> tuple[str, list, list]:
    """Open ``url``, open the querystash panel; (its toolbar entry, rows,
    invalidations)."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    entry = WebDriverWait(browser, 30).until(lambda d: d.execute_script(OPEN_PANEL))
    rows = WebDriverWait(browser, 30).until(lambda d: d.execute_script(ROWS))
    return entry, rows, browser.execute_script(INVALIDATIONS)


def test_the_panel_lists_the_pages_reads(server, browser, tmp_path):
    # A first visit fills the cache; one with ?touch= writes and invalidates
    # (it runs first, so both visits start from the same state).
    entry, rows, invalidations = panel_rows(browser, f"{server}/page/?touch=1")
    assert [r[:2] for r in rows] == [["fill", ""], ["fill", ""], ["veto", "volatile"],
                                     ["veto", "nocache"]]
    assert any("shop_product" in tags for tags in invalidations)
    assert entry.startswith("querystash")

    entry, rows, invalidations = panel_rows(browser, f"{server}/page/")
    assert [r[:2] for r in rows] == [["hit", ""], ["hit", ""], ["veto", "volatile"],
                                     ["veto", "nocache"]]
    assert "order_by('?')" in rows[2][2] and ".nocache()" in rows[3][2]
    assert invalidations == []
    assert "2 hits, 0 misses, 2 not cached" in entry

    browser.set_window_size(1280, 900)
    shot = tmp_path / "panel.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("QUERYSTASH_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, SCREENSHOT)
