"""An eligibility check that forbids caching any query reading testapp_author."""

from __future__ import annotations

from querystash import hookimpl

VETOED_TABLE = "testapp_author"


class VetoAuthors:
    def __init__(self):
        self.asked = 0

    @hookimpl
    def querystash_eligibility(self, config):
        def check(info):
            self.asked += 1
            if VETOED_TABLE in info.tables:
                return False
            return None

        return check
