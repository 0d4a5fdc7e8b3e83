"""The memo of decoded entries (``_decoded``): a hit on a shared store that
returns bytes already decoded skips the MAC and the unpickling. It must answer
exactly what ``_codec.decode`` answers for the same (key, bytes), and never
let one caller change what another gets.

Differential tests over generated sequences of store values, plus positive
controls: memos with the bug planted (keyed by key alone; sharing mutable
rows) are caught by the same checks."""

from __future__ import annotations

import datetime
import hashlib
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import override_settings
from hypothesis import HealthCheck, find, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from querystash import _codec, _runtime
from querystash._decoded import DecodedMemo
from querystash._localstore import thaw
from tests.testapp.models import Author, Book

SECRET = hashlib.sha256(b"test_decoded").digest()
OTHER_SECRET = hashlib.sha256(b"another site").digest()
KEYS = ["qs:e:a", "qs:e:b", "qs:e:c"]

# -- the differential check ---------------------------------------------------------

values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.binary(max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.datetimes(timezones=st.just(datetime.UTC)),
    st.lists(st.integers(), max_size=3),  # a PostgreSQL array: mutable
)
rows = st.lists(values, max_size=4).map(tuple)
results = st.one_of(st.lists(rows, max_size=4), rows, st.none(), st.integers())
stamps = st.lists(st.binary(min_size=8, max_size=8), min_size=1, max_size=3)


@st.composite
def store_values(draw):
    """(key, what the store returns for it): mostly entries signed under it,
    some corrupt, foreign or signed for another key or site."""
    key = draw(st.sampled_from(KEYS))
    payload = (draw(stamps), draw(results))
    how = draw(st.sampled_from(["signed"] * 4 + ["truncated", "flipped", "other_key",
                                                   "other_secret", "not_bytes", "none"]))
    if how == "none":
        return key, None
    if how == "not_bytes":
        return key, payload
    secret = OTHER_SECRET if how == "other_secret" else SECRET
    signed_for = key + "x" if how == "other_key" else key
    blob = _codec.encode(secret, signed_for, payload)
    if how == "truncated":
        blob = blob[: draw(st.integers(0, len(blob) - 1))]
    elif how == "flipped":
        i = draw(st.integers(0, len(blob) - 1))
        blob = blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1 :]
    return key, blob


#: a store's successive answers; a value repeated (bytes equal, not the same
#: object) is what a hit on an unchanged entry looks like
reads = st.lists(store_values(), min_size=1, max_size=12).flatmap(
    lambda vs: st.lists(st.sampled_from(vs), min_size=len(vs), max_size=3 * len(vs))
)


def _mutate(result) -> None:
    """What a caller could do to what it was handed."""
    if type(result) is list:
        for row in result:
            for value in row if type(row) is tuple else ():
                if type(value) is list:
                    value.append(999)
        result.append(("planted",))


def agrees(memo, sequence) -> bool:
    """Every answer of ``memo`` equals a fresh ``_codec.decode`` of the same
    bytes, even after each caller mutated what it got."""
    for key, blob in sequence:
        if isinstance(blob, bytes):
            blob = bytes(bytearray(blob))  # equal bytes, another object (as from a socket)
        got = memo.decode(key, blob)
        if got != _codec.decode(SECRET, key, blob):
            return False
        if got is not None:
            _mutate(got[1])
    return True


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reads, st.integers(64, 4096))
def test_memo_answers_what_decoding_answers(sequence, budget):
    memo = DecodedMemo(SECRET, budget=budget)
    assert agrees(memo, sequence)
    assert memo._size <= budget
    assert memo._size == sum(len(blob) for blob, _ in memo._held.values())


# -- positive controls: the bugs a memo could have, planted ---------------------------


class _KeyedByKeyAlone(DecodedMemo):
    """Planted: trusts what it holds for a key whatever bytes the store returns."""

    def decode(self, key, blob):
        held = self._held.get(key)
        if held is not None:
            return thaw(key, held[1])
        return super().decode(key, blob)


class _SharesMutableRows(DecodedMemo):
    """Planted: holds every result, handing out the very objects it holds."""

    def decode(self, key, blob):
        held = self._held.get(key)
        if type(blob) is bytes and held is not None and held[0] == blob:
            return held[1]
        payload = _codec.decode(self.secret, key, blob)
        if payload is not None and type(blob) is bytes:
            self._held[key] = (blob, payload)
        return payload


@pytest.mark.parametrize("planted", [_KeyedByKeyAlone, _SharesMutableRows])
def test_the_check_catches_a_planted_memo(planted):
    found = find(reads, lambda seq: not agrees(planted(SECRET), seq),
                 settings=hsettings(max_examples=2000, database=None, derandomize=True))
    assert found  # a sequence on which the planted memo answers wrongly


# -- the read path, on a real redis ------------------------------------------------------


def _entry_key(rt) -> str:
    keys = []
    original = rt.storage.set

    def spy(key, value, timeout):
        keys.append(key)
        return original(key, value, timeout)

    rt.storage.set = spy
    try:
        list(Book.objects.filter(status=0).order_by("pk").values_list("pk", "title", "price"))
    finally:
        del rt.storage.set
    (key,) = keys
    return key


@pytest.mark.django_db(transaction=True)
def test_a_held_entry_is_served_only_for_its_bytes(redis_cache_alias, counts,
                                                   django_assert_num_queries):
    """Hit once (the memo holds the entry), then change the stored bytes:
    rows signed anew under the same key and stamps are served as they now
    are, and a corrupt value is a miss."""
    ann = Author.objects.create(name="Ann", age=40)
    for i in range(3):
        Book.objects.create(title=f"B{i}", author=ann, price=Decimal(f"{i}.50"), status=0)
    with override_settings(CACHES={**settings.CACHES,
                                   "default": dict(settings.CACHES[redis_cache_alias])}):
        rt = _runtime.current
        assert not rt.local
        key = _entry_key(rt)

        def read():
            return list(Book.objects.filter(status=0).order_by("pk")
                        .values_list("pk", "title", "price"))

        expected = read()
        with django_assert_num_queries(0):
            assert read() == expected
        assert key in rt.decoded._held
        blob = rt.storage.get_many([key])[0]
        stamps, rows = _codec.decode(rt.secret, key, blob)
        planted = [(pk, "planted", price) for pk, _title, price in rows]
        rt.storage.set(key, _codec.encode(rt.secret, key, (stamps, planted)), 60)
        with django_assert_num_queries(0):
            assert read() == planted  # the store's rows as they are now, not the held ones
        rt.storage.set(key, blob[:-1], 60)
        with django_assert_num_queries(1):
            assert read() == expected
        assert counts("testapp.Book")["corrupt"] == 1
