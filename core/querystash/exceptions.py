class StaleRead(AssertionError):
    """Verify mode found cached rows that differ from the database."""
