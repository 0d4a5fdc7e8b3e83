class StaleRead(AssertionError):
    """Verify mode found cached rows that differ from the database."""


class Uncacheable(Exception):
    """Raised by a key function: this query must not be cached.

    The read runs on the database, uncached, and is counted as ``vetoed``.
    ``reason`` says why (``"unencodable parameter of type ..."``).
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
