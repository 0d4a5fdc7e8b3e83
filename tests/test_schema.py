"""``querystash.Setting`` / ``SettingsSection``: the one validator's rules."""

from __future__ import annotations

import pytest

from querystash import Setting, SettingsSection


@pytest.mark.parametrize(("setting", "good", "bad", "words"), [
    (Setting(16, int, minimum=1), [1, 16], [0, -1, True, 1.5, "16", None], "an int of at least 1"),
    (Setting(0.5, float, above=0), [0.1, 2], [0, -0.1, True, "1"], "a positive number"),
    (Setting(0, float, minimum=0, maximum=1), [0, 0.5, 1], [1.01, -0.1], "a number from 0 to 1"),
    (Setting(None, int, minimum=1, none=True), [None, 3], [0, "x"], "an int of at least 1 or None"),
    (Setting(True, bool), [True, False], [1, "yes", None], "True or False"),
])
def test_setting_accepts_and_refuses(setting, good, bad, words):
    assert setting.describe() == words
    assert [setting.error(v) for v in good] == [None] * len(good)
    assert all(setting.error(v) == words for v in bad), [setting.error(v) for v in bad]


def test_a_check_says_what_is_expected():
    def even(value):
        if value % 2:
            raise ValueError("expected an even int")

    setting = Setting(2, int, check=even)
    assert setting.error(4) is None
    assert setting.error(3) == "an even int"


SECTION = SettingsSection("demo", {"n": Setting(2, int, minimum=1),
                                   "name": Setting("x", str)})


def test_problems_name_each_key_and_clean_keeps_only_right_values():
    problems = SECTION.problems({"n": 0, "nmae": "y"})
    assert sorted(p.id for p in problems) == ["querystash.E003", "querystash.E006"]
    assert {p.key for p in problems} == {'QUERYSTASH["demo"]["n"]', 'QUERYSTASH["demo"]["nmae"]'}
    assert SECTION.clean({"n": 0, "name": "z", "nmae": "y"}) == {"n": 2, "name": "z"}
    assert SECTION.problems({"n": 3}) == []
    with pytest.raises(ValueError, match=r'QUERYSTASH\["demo"\]\["n"\] is 0'):
        SECTION.validated({"n": 0})


def test_fill_keeps_the_users_values_and_leaves_wrong_values_for_the_checks():
    current = {"QUERYSTASH": {"demo": {"n": 5}}}
    SECTION.djp_hook()(current)
    assert current["QUERYSTASH"]["demo"] == {"n": 5, "name": "x"}
    for wrong in ({"QUERYSTASH": "oops"}, {"QUERYSTASH": {"demo": "oops"}}):
        before = repr(wrong)
        SECTION.fill(wrong)  # no AttributeError: the checks report it (E001, E003)
        assert repr(wrong) == before


def test_a_storage_section_is_filled_only_when_written():
    storage = SettingsSection("vault", {"url": Setting("vault://default", str)}, storage=True)
    empty: dict = {}
    storage.fill(empty)
    assert empty == {"QUERYSTASH": {}}  # adding it would choose the store
    written = {"QUERYSTASH": {"vault": {}}}
    storage.fill(written)
    assert written["QUERYSTASH"]["vault"] == {"url": "vault://default"}
