"""Built-in key function: a digest of everything that decides the rows."""

from __future__ import annotations

from hashlib import blake2b

from django.db import connections

from .hookspecs import hookimpl
from .version import __version__


@hookimpl(trylast=True)
def querystash_key_function(config):
    # The library version is in the namespace: a new release never reads an
    # entry in an older payload format. Stamps carry no version (see _protocol).
    namespace = f"{config['KEY_PREFIX']}:{__version__}:e:"

    def key(info) -> str:
        # Which database, not only which alias: two sites (or staging and
        # production) sharing a store under one KEY_PREFIX never read each
        # other's rows. (Their stamps are shared: that only over-invalidates.)
        db = connections[info.alias].settings_dict
        text = repr((db["ENGINE"], str(db["NAME"]), db.get("HOST"), db.get("PORT"),
                     info.alias, info.shape, info.sql, info.params))
        digest = blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20)
        return namespace + digest.hexdigest()

    return key
