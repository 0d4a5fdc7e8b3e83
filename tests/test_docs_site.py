"""The built docs site, looked at in headless Chromium at 1280 px: on the quick
start and the hook reference no code block scrolls sideways and no table cell
breaks a word; the header shows the version and the repository link.

Uses Debian's ``chromium`` and ``chromium-driver`` (scripts/test installs
them) through selenium, with the driver's path given, so nothing is downloaded
at run time. Screenshots are saved under the test's tmp dir
(docs/img/site-hooks-1280.png is one, taken this way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
REPO_URL = "https://git.example.org/querystash"
PAGES = {"home": "index.html", "hooks": "hooks/index.html"}

#: code blocks wider than their box: they would scroll sideways
OVERFLOWING_CODE = """
return [...document.querySelectorAll('.md-content pre > code')]
    .filter(c => c.scrollWidth > c.clientWidth)
    .map(c => `${c.scrollWidth} > ${c.clientWidth}: ${c.textContent.slice(0, 60)}`);
"""

#: words in table cells laid out on more than one line (a space, "-" or "/"
#: is where a cell may break; anywhere else is mid-word)
BROKEN_WORDS = """
const broken = [];
for (const cell of document.querySelectorAll('.md-content table td, .md-content table th')) {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const m of node.textContent.matchAll(/[^\\s\\-\\/]+/g)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
      if (tops.size > 1) broken.push(m[0]);
    }
  }
}
return broken;
"""


def _missing() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium / chromium-driver are not installed (scripts/test installs them)"
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (a dev dependency)"
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    reason = _missing()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "QUERYSTASH_REPO_URL": REPO_URL, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f",
                           str(ROOT / "mkdocs.yml"), "-d", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return out


def headless_chrome():
    """Debian's chromium, headless, through its chromedriver (no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser(site):
    driver = headless_chrome()
    yield driver
    driver.quit()


def open_page(browser, site: Path, name: str) -> None:
    browser.get((site / PAGES[name]).as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    # the viewport, not the window, is what must be 1280 px wide
    assert browser.execute_script("return document.documentElement.clientWidth") == 1280


def full_screenshot(browser, path: Path) -> None:
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(height, 6000))
    browser.save_screenshot(str(path))
    browser.set_window_size(1280, 1000)


@pytest.mark.parametrize("name", PAGES)
def test_no_code_block_scrolls_and_no_cell_breaks_a_word(name, site, browser, tmp_path):
    open_page(browser, site, name)
    assert browser.execute_script("return document.querySelectorAll('pre > code').length") > 3
    assert browser.execute_script(OVERFLOWING_CODE) == []
    if name == "hooks":  # the hook table
        assert browser.execute_script("return document.querySelectorAll('td').length") > 3
    assert browser.execute_script(BROKEN_WORDS) == []
    full_screenshot(browser, tmp_path / f"{name}-1280.png")
    assert (tmp_path / f"{name}-1280.png").stat().st_size > 10_000


def test_the_header_shows_the_version_and_the_repository(site, browser):
    with open(ROOT / "core" / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    open_page(browser, site, "home")
    title = browser.execute_script(
        "return document.querySelector('.md-header__topic').textContent.trim()")
    assert title == f"querystash {version}"
    assert browser.execute_script("return document.querySelector('a.md-source').href") \
        == REPO_URL
    assert version in browser.execute_script(
        "return document.querySelector('.md-copyright').textContent")


def test_the_checks_see_an_overflow_and_a_broken_word(site, browser):
    """Positive control: a code line too long for its box, and a table cell
    that breaks words anywhere (what Material's default did), are reported."""
    open_page(browser, site, "hooks")
    planted = browser.execute_script("""
        const pre = document.createElement('pre');
        pre.innerHTML = '<code>' + 'x'.repeat(400) + '</code>';
        document.querySelector('.md-content article').appendChild(pre);
        const code = document.querySelector('.md-content table td code');
        code.style.display = 'inline-block';
        code.style.width = '4em';
        code.style.wordBreak = 'break-all';
        return code.textContent;
    """)
    assert planted.startswith("querystash_")  # a hook name from the hook table
    assert len(browser.execute_script(OVERFLOWING_CODE)) == 1
    assert planted in browser.execute_script(BROKEN_WORDS)
