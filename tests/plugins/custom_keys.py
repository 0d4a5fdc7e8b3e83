"""A key function that records the queries it keys."""

from __future__ import annotations

from hashlib import sha256

from querystash import encode, hookimpl

PREFIX = "testkeys:"


class CustomKeys:
    def __init__(self):
        self.seen = []

    @hookimpl
    def querystash_key_function(self, config):
        def key(info):
            self.seen.append(info)
            digest = sha256(encode((info.alias, info.shape, info.sql, info.params)))
            return PREFIX + digest.hexdigest()

        return key
