"""Download the pinned sdists of the third-party suites from PyPI and unpack them.

    python -m tests.thirdparty.fetch          # every suite (scripts/test runs this)

Idempotent: a suite already unpacked under ``.cache/thirdparty/`` is left alone. The sdist's
sha256 is checked against the pin before anything is unpacked.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

from tests.thirdparty.suites import SUITES, Suite

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "thirdparty"
_LOCK = threading.Lock()


def ensure(suite: Suite) -> Path:
    """The unpacked sdist of ``suite``, downloading it first if needed."""
    # One at a time: the plain and the cached run of a suite start together
    # (two threads); on a fresh clone both would download, and the second's
    # rmtree would delete the directory the first one's tests run in.
    with _LOCK:
        return _ensure(suite)


def _ensure(suite: Suite) -> Path:
    target = CACHE / suite.dirname
    if (target / "PKG-INFO").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-deps", "--no-binary", ":all:", f"{suite.dist}=={suite.version}", "-d", tmp],
            check=True,
        )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != suite.sha256:
            raise RuntimeError(f"{sdist.name}: sha256 {digest}, pinned {suite.sha256}")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(sdist) as tar:
            tar.extractall(unpacked, filter="data")
        (top,) = unpacked.iterdir()  # an sdist holds one "<name>-<version>/" directory
        shutil.rmtree(target, ignore_errors=True)
        top.rename(target)
    return target


def main() -> None:
    for suite in SUITES:
        print(f"{suite.dist}=={suite.version}: {ensure(suite)}")


if __name__ == "__main__":
    main()
