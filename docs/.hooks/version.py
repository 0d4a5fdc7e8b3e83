"""mkdocs hook: the querystash version in the header and footer, and a link to
the repository when the clone knows where it came from.

The version is read from core/pyproject.toml, so the site always shows the
release it documents. The repository link is ``QUERYSTASH_REPO_URL`` if set,
else the clone's ``origin`` remote when that is a web or ssh URL; a checkout
without one (a local copy) shows no link rather than a made-up one.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def version() -> str:
    with open(ROOT / "core" / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def repository_url() -> str | None:
    url = os.environ.get("QUERYSTASH_REPO_URL")
    if not url:
        proc = subprocess.run(["git", "-C", str(ROOT), "remote", "get-url", "origin"],
                              capture_output=True, text=True, check=False)
        url = proc.stdout.strip() if proc.returncode == 0 else ""
    ssh = re.fullmatch(r"git@([^:]+):(.+?)(\.git)?", url)
    if ssh:  # git@host:owner/name.git -> https://host/owner/name
        url = f"https://{ssh.group(1)}/{ssh.group(2)}"
    if re.match(r"https?://", url):
        return url.removesuffix(".git")
    return None


def on_config(config, **kwargs):
    v = version()
    config["site_name"] = f"querystash {v}"  # the header shows it on every page
    config["copyright"] = f"querystash {v} · Apache-2.0"
    url = repository_url()
    if url:
        config["repo_url"] = url
        config["repo_name"] = "querystash"
    return config
