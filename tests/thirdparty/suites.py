"""The third-party Django apps whose own test suites run with querystash caching every model.

Each app is pinned to one sdist on PyPI (name, version and sha256); ``fetch.py`` downloads
and unpacks it under ``.cache/thirdparty/`` and the suite runs from the unpacked tree, so the
app's code and tests come from that one file. Nothing of theirs is committed here.

Exception lists are keyed by pytest node id (relative to the unpacked sdist). Each entry says
why; none is a pattern. ``test_thirdparty.py`` fails on an entry that no longer fails, so the
lists cannot silently outlive their reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Suite:
    name: str  # short id, used in test ids and file names
    dist: str  # PyPI distribution
    version: str
    sha256: str  # of the sdist
    settings: str  # the suite's own settings module, extended by qs_thirdparty_settings
    args: tuple[str, ...]  # pytest arguments: what CI runs
    full_args: tuple[str, ...] = ()  # QUERYSTASH_THIRDPARTY_FULL=1 runs these instead
    pythonpath: tuple[str, ...] = (".",)  # relative to the unpacked sdist
    #: fail in the cached run only because a hit saves a query: node id -> reason
    num_queries: dict[str, str] = field(default_factory=dict)
    #: may fail without querystash (on some Django version or database): node id -> reason;
    #: such a test is not compared
    plain_failures: dict[str, str] = field(default_factory=dict)

    @property
    def dirname(self) -> str:
        return f"{self.dist}-{self.version}"

    def pytest_args(self) -> tuple[str, ...]:
        if os.environ.get("QUERYSTASH_THIRDPARTY_FULL") == "1" and self.full_args:
            return self.full_args
        return self.args


_TRACKER_CLASSES = ("FieldTrackerTests", "InheritedFieldTrackerTests", "ModelTrackerTests",
                    "InheritedModelTrackerTests", "AbstractModelTrackerTests")

SUITES: list[Suite] = [
    Suite(
        name="treebeard",
        dist="django-treebeard",
        version="7.0.3",
        sha256="eb25678a4e79bdcc315c3cf2158c33a8ade5f51cf4df220909abc603bbd62681",
        settings="tests.settings",
        # CI size (~75 tests): the moves, deletes and stale-node tests of the materialized
        # path and nested sets base models, whose writes rewrite many rows at once with F()
        # updates. The full suite (2,400 tests, several minutes): QUERYSTASH_THIRDPARTY_FULL=1.
        args=("tests/test_treebeard.py", "-k",
              "(TestMoveBranch or TestDelete or TestStaleNodes) and not Proxy and not Uuid"
              " and not CustomId and not Sorted and not Inherited and not AL_ and not LT_"),
        full_args=("tests",),
    ),
    Suite(
        name="comments",
        dist="django-contrib-comments",
        version="2.2.0",
        sha256="48de00f15677e016a216aeff205d6e00e4391c9a5702136c64119c472b7356da",
        settings="qs_thirdparty_comments_settings",
        args=("tests/testapp/tests",),
        pythonpath=(".", "tests"),
    ),
    Suite(
        name="model_utils",
        dist="django-model-utils",
        version="5.0.0",
        sha256="041cdd6230d2fbf6cd943e1969318bce762272077f4ecd333ab2263924b4e5eb",
        settings="tests.settings",
        args=("tests",),
        plain_failures={
            **{
                f"tests/test_fields/test_field_tracker.py::{cls}::test_save_with_args":
                    "Django 6.0 removed Model.save()'s positional arguments"
                for cls in _TRACKER_CLASSES
            },
            **{
                f"tests/test_managers/test_join_manager.py::JoinManagerTest::{test}":
                    "SQLite only: JoinQueryset runs two statements in one execute(), which "
                    "sqlite3 refuses (model-utils' own CI uses PostgreSQL, where it passes)"
                for test in ("test_join_with_other_qs", "test_reverse_join", "test_self_join",
                             "test_self_join_with_where_statement")
            },
        },
    ),
]
