"""A plugin with a misspelled hook: must be refused, loudly."""

from querystash import hookimpl


@hookimpl
def querystash_storrage(name, config):  # sic: querystash_storage
    return None
