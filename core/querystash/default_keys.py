"""Built-in key function: a digest of everything that decides the rows."""

from __future__ import annotations

from hashlib import blake2b

from django.db import connections

from ._encode import encode_into, encode_params_into, failed
from .hookspecs import hookimpl
from .version import __version__


@hookimpl(trylast=True)
def querystash_key_function(config):
    # The library version is in the namespace: a new release never reads an
    # entry in an older payload format. Stamps carry no version: a stamp is a
    # random value, not a format (``_stamps``), so releases share them.
    namespace = f"{config['KEY_PREFIX']}:{__version__}:e:"
    # The encoded (database, alias, shape) part, by those values: a hit only
    # encodes the SQL and the parameters.
    heads: dict[tuple, str] = {}

    def key(info) -> str:
        # Which database, not only which alias: two sites (or staging and
        # production) sharing a store under one KEY_PREFIX never read each
        # other's rows. (Their stamps are shared: that only over-invalidates.)
        # Every part goes through the injective encoder (see _encode), never
        # repr(), which is not an encoding. An unknown parameter type raises
        # UnencodableValue, an Uncacheable: the read runs uncached.
        db = connections[info.alias].settings_dict
        sql = info.sql
        try:
            ident = (info.alias, info.shape, db["ENGINE"], db["NAME"], db.get("HOST"),
                     db.get("PORT"))
            head = heads.get(ident)
            if head is None:
                parts: list[str] = []
                alias, shape, engine, name, host, port = ident
                encode_into((alias, shape, engine, str(name), host, port), parts)
                head = heads[ident] = "".join(parts)
            out = [head, f"s{len(sql)}:", sql]
            encode_params_into(info.params, out)
        except Exception as exc:
            raise failed(info.params, exc) from exc
        digest = blake2b("".join(out).encode("utf-8", "surrogatepass"), digest_size=20)
        return namespace + digest.hexdigest()

    return key
