"""Built-in key function: a digest of everything that decides the rows."""

from __future__ import annotations

from hashlib import blake2b

from .hookspecs import hookimpl
from .version import __version__


@hookimpl(trylast=True)
def querystash_key_function(config):
    # The library version is in the namespace: a new release never reads an
    # entry in an older payload format. Stamps carry no version (see _protocol).
    namespace = f"{config['KEY_PREFIX']}:{__version__}:e:"

    def key(info) -> str:
        text = repr((info.alias, info.shape, info.sql, info.params))
        digest = blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20)
        return namespace + digest.hexdigest()

    return key
