"""System checks on the QUERYSTASH setting (``manage.py check``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core import checks as django_checks
from django.test import override_settings

from querystash import _runtime, checks
from tests.helpers import system_checks

CHECKS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "checks.md"
CHECKS_SOURCE = "".join(path.read_text() for path in Path(checks.__file__).parent.glob("*.py"))


def messages(value, *, deploy: bool = False, pin: bool = True, **other_settings) -> list:
    """The querystash messages ``manage.py check`` gives for ``QUERYSTASH = value``.

    ``pin``: a dict without STORAGE gets STORAGE="django", so storage plugins
    installed next to the core (querystash-redis...) don't change the answer."""
    if pin and isinstance(value, dict) and "STORAGE" not in value:
        value = {**value, "STORAGE": "django"}
    with override_settings(QUERYSTASH=value, **other_settings):
        found = system_checks(deploy=deploy)
    return [m for m in found if m.id.startswith("querystash.")]


def ids(value, **kwargs) -> list[str]:
    return [m.id for m in messages(value, **kwargs)]


def only(value, expected_id: str, **kwargs):
    found = messages(value, **kwargs)
    assert [m.id for m in found] == [expected_id], [str(m) for m in found]
    return found[0]


# -- valid configurations ---------------------------------------------------------


def test_the_suite_settings_are_valid():
    assert messages(settings.QUERYSTASH) == []


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"MODELS": {"*.*": {"ops": "all"}}},
        {
            "ENABLED": True,
            "MODELS": {
                "testapp.*": {"ops": "all", "timeout": 600},
                "testapp.Book": {"ops": ["get", "fetch", "count"], "cache_get": False},
                "testapp.author": {"ops": "exists"},  # labels are case-insensitive
                "auth.*": False,
            },
            "STORAGE": "django",
            "TIMEOUT": 300,
            "STAMP_TIMEOUT": 3600,
            "CACHE_GET": False,
            "IGNORE_TABLES": ("django_session",),
            "KEY_PREFIX": "site1",
            "DISABLED_PLUGINS": ["m2m"],
            "VERIFY": 0.01,
            "VERIFY_RAISE": False,
            "django": {"cache": "default"},
        },
    ],
    ids=["empty", "all-models", "every-key"],
)
def test_valid_configuration_gives_no_messages(value):
    assert messages(value) == []


# -- E001 / E002 -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["notadict", ["MODELS"], None])
def test_non_dict_setting_is_e001(value):
    error = only(value, "querystash.E001")
    assert "QUERYSTASH" in error.msg and error.hint


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("TIMEOUTS", "TIMEOUT"), ("STORGE", "STORAGE"), ("MODEL", "MODELS"),
     ("DISABLE_PLUGINS", "DISABLED_PLUGINS"), ("VERIFY_RAISES", "VERIFY_RAISE")],
)
def test_unknown_key_is_e002_with_the_close_match(key, suggestion):
    error = only({key: 10}, "querystash.E002")
    assert f'"{key}"' in error.msg
    assert f'"{suggestion}"' in error.hint


def test_unknown_key_without_close_match_lists_the_known_keys():
    error = only({"XYZZY": 1}, "querystash.E002")
    assert "TIMEOUT" in error.hint and "MODELS" in error.hint


# -- E003: wrong types -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "setting"),
    [
        ({"TIMEOUT": "10"}, "TIMEOUT"),
        ({"TIMEOUT": True}, "TIMEOUT"),
        ({"TIMEOUT": 1.5}, "TIMEOUT"),
        ({"TIMEOUT": 0}, "TIMEOUT"),
        ({"TIMEOUT": -60}, "TIMEOUT"),
        ({"STAMP_TIMEOUT": "1d"}, "STAMP_TIMEOUT"),
        ({"ENABLED": "yes"}, "ENABLED"),
        ({"ENABLED": 1}, "ENABLED"),
        ({"CACHE_GET": "no"}, "CACHE_GET"),
        ({"VERIFY": 2}, "VERIFY"),
        ({"VERIFY": -0.1}, "VERIFY"),
        ({"VERIFY": True}, "VERIFY"),
        ({"VERIFY": "0.1"}, "VERIFY"),
        ({"VERIFY": "often"}, "VERIFY"),
        ({"VERIFY_RAISE": "yes"}, "VERIFY_RAISE"),
        ({"STORAGE": 5}, "STORAGE"),
        ({"KEY_PREFIX": None}, "KEY_PREFIX"),
        ({"DISABLED_PLUGINS": "default_eligibility"}, "DISABLED_PLUGINS"),
        ({"IGNORE_TABLES": "django_session"}, "IGNORE_TABLES"),
        ({"IGNORE_TABLES": None}, "IGNORE_TABLES"),
        ({"MODELS": ["testapp.*"]}, "MODELS"),
        ({"django": "default"}, "django"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_wrong_type_is_e003_naming_the_setting(value, setting):
    found = messages(value)
    errors = [m for m in found if m.id == "querystash.E003"]
    assert len(errors) == 1, [str(m) for m in found]
    # besides E003, only the runtime's own E010 (caching off) may follow
    assert {m.id for m in found} <= {"querystash.E003", "querystash.E010"}
    error = errors[0]
    assert f'QUERYSTASH["{setting}"]' in error.msg
    assert "expected" in error.msg and error.hint.startswith("Change")


def test_e003_states_the_expected_type():
    assert "expected a positive int (seconds)" in only({"TIMEOUT": True}, "querystash.E003").msg
    assert "expected True or False" in only({"ENABLED": "yes"}, "querystash.E003").msg
    assert "from 0 to 1" in only({"VERIFY": 2}, "querystash.E003").msg


@pytest.mark.parametrize(
    "value",
    [{"TIMEOUT": "10"}, {"STAMP_TIMEOUT": "1d"}, {"VERIFY": "often"}, {"IGNORE_TABLES": None},
     {"KEY_PREFIX": None}, {"MODELS": {"testapp.*": {"timeout": "600"}}}],
    ids=repr,
)
def test_a_wrong_type_leaves_the_site_up_with_caching_off(value):
    """A typo in settings must reach ``manage.py check`` as E003, not crash
    start-up (``AppConfig.ready`` builds the runtime from the same setting)."""
    with override_settings(QUERYSTASH=value):
        rt = _runtime.current
        assert rt is not None
        found = [m.id for m in system_checks() if m.id.startswith("querystash.")]
    assert "querystash.E003" in found


@pytest.mark.django_db(transaction=True)
def test_models_of_the_wrong_type_do_not_break_queries():
    from tests.testapp.models import Author

    Author.objects.create(name="Tove")
    with override_settings(QUERYSTASH={"MODELS": ["testapp.*"]}):
        assert list(Author.objects.values_list("name", flat=True)) == ["Tove"]


# -- E004 / E005: MODELS ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("testapp", "app_label.Model"),
        ("Book", "app_label.Model"),
        ("nosuchapp.*", "nosuchapp"),
        ("nosuchapp.Book", "nosuchapp"),
        ("testapp.Nope", "Nope"),
        ("testapp.Books", "Books"),
    ],
)
def test_bad_model_pattern_is_e004(pattern, words):
    error = only({"MODELS": {pattern: {"ops": "all"}}}, "querystash.E004")
    assert f'QUERYSTASH["MODELS"]["{pattern}"]' in error.msg
    assert words in error.msg
    assert error.hint


def test_app_label_not_module_path_is_e004():
    # the app is tests.testapp, its label testapp
    error = only({"MODELS": {"tests.testapp.Book": {}}}, "querystash.E004")
    assert "label" in error.hint.lower()


def test_unknown_model_key_is_e005():
    # "*.*": these model-rule checks do not depend on app lookups
    error = only({"MODELS": {"*.*": {"opps": "all"}}}, "querystash.E005")
    assert '"opps"' in error.msg and "ops" in error.hint


@pytest.mark.parametrize("ops", ["fetchall", ["get", "gett"], ("count", "iterate")])
def test_unknown_op_is_e005(ops):
    error = only({"MODELS": {"*.*": {"ops": ops}}}, "querystash.E005")
    assert '["ops"]' in error.msg
    assert "fetch" in error.hint


@pytest.mark.parametrize(
    "rule", [{"timeout": "600"}, {"timeout": 0}, {"timeout": True}, {"cache_get": "yes"},
             {"ops": 3}, "all", True],
)
def test_wrong_type_in_a_model_rule_is_e003(rule):
    error = only({"MODELS": {"*.*": rule}}, "querystash.E003")
    assert 'QUERYSTASH["MODELS"]["*.*"]' in error.msg


def test_every_bad_model_entry_is_reported():
    found = ids({"MODELS": {"nosuchapp.*": {}, "testapp.Book": {"opps": 1}, "x": {}}})
    assert sorted(found) == ["querystash.E004", "querystash.E004", "querystash.E005"]


# -- W002 / W003 ----------------------------------------------------------------------


def test_section_for_a_plugin_not_installed_is_w002():
    warning = only({"nosuchplugin": {"url": "x"}}, "querystash.W002")
    assert 'QUERYSTASH["nosuchplugin"]' in warning.msg
    assert "django" in warning.hint  # lists the sections that are installed


def test_section_of_an_installed_plugin_is_accepted():
    from querystash import plugins
    from tests.plugins import counting_observer, registered

    with registered(counting_observer, "querystash_counting"):
        # the section is named after the plugin, "querystash_" prefix or not
        assert messages({"counting": {"x": 1}}) == []
        assert messages({"querystash_counting": {"x": 1}}) == []
    assert plugins.pm.get_plugin("querystash_counting") is None
    assert ids({"counting": {"x": 1}}) == ["querystash.W002"]


@pytest.mark.parametrize(
    "value",
    [{"TIMEOUT": 900, "STAMP_TIMEOUT": 60}, {"TIMEOUT": 100_000}, {"STAMP_TIMEOUT": 10}],
)
def test_stamps_shorter_than_entries_is_w003(value):
    warning = only(value, "querystash.W003")
    assert "STAMP_TIMEOUT" in warning.msg and warning.hint


def test_no_w003_when_stamps_outlive_entries():
    assert messages({"TIMEOUT": 60, "STAMP_TIMEOUT": 60}) == []


def test_model_timeout_longer_than_stamps_is_w003():
    # the hint says "at least as long as the longest timeout": per-model ones too
    value = {"STAMP_TIMEOUT": 3600, "MODELS": {"testapp.*": {"timeout": 7200}}}
    assert ids(value) == ["querystash.W003"]


# -- W001: process-local store in production ----------------------------------------------


# W001 does not depend on MODELS: the tests use an empty setting.


def test_locmem_outside_debug_is_deploy_warning_w001():
    # STORAGE pinned: an installed storage plugin would otherwise be chosen.
    warning = only({"STORAGE": "django"}, "querystash.W001", deploy=True, DEBUG=False)
    assert "process-local" in warning.msg
    assert "redis" in warning.hint


def test_w001_is_a_deployment_check_only():
    assert ids({}, deploy=False, DEBUG=False) == []


def test_no_w001_in_debug():
    assert ids({}, deploy=True, DEBUG=True) == []


def test_no_w001_on_a_shared_cache(redis_cache_alias):
    value = {"django": {"cache": redis_cache_alias}}
    with override_settings(QUERYSTASH=value):
        assert _runtime.current.storage.shared
    assert ids(value, deploy=True, DEBUG=False) == []


# -- W005: a culling cache with few entries ---------------------------------------------------


def test_locmem_with_djangos_default_max_entries_is_w005(settings):
    settings.CACHES = {**settings.CACHES, "small": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "small"}}
    value = {"STORAGE": "django", "django": {"cache": "small"}}
    assert ids(value) == []  # a deployment check: no noise while developing
    warning = only(value, "querystash.W005", deploy=True, DEBUG=True)  # DEBUG: no W001
    assert "300" in warning.msg
    assert "MAX_ENTRIES" in warning.hint


def test_no_w005_with_enough_entries_or_a_store_that_does_not_cull(settings, redis_cache_alias):
    settings.CACHES = {**settings.CACHES, "big": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "big",
        "OPTIONS": {"MAX_ENTRIES": checks.MIN_ENTRIES}}}
    for alias in ("big", redis_cache_alias):
        assert ids({"STORAGE": "django", "django": {"cache": alias}}, deploy=True,
                   DEBUG=True) == []


# -- runtime problems surface as E010 --------------------------------------------------------


def test_unknown_cache_alias_is_reported():
    found = messages({"STORAGE": "django", "django": {"cache": "nosuchcache"}})
    assert found and all(m.level >= django_checks.ERROR for m in found)
    assert any("nosuchcache" in m.msg for m in found)


def test_dummy_cache_is_reported(settings):
    settings.CACHES = {
        **settings.CACHES,
        "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    }
    found = messages({"STORAGE": "django", "django": {"cache": "dummy"}})
    assert [m.id for m in found] == ["querystash.E010"]
    assert "DummyCache" in found[0].msg


# -- docs ---------------------------------------------------------------------------------


def test_every_check_id_is_documented():
    used = set(re.findall(r'"(querystash\.[EWI]\d{3})"', CHECKS_SOURCE))
    assert used >= {"querystash.E001", "querystash.W001"}
    assert CHECKS_PAGE.exists(), f"{CHECKS_PAGE} is missing"
    page = CHECKS_PAGE.read_text()
    missing = sorted(i for i in used if f"### `{i}`" not in page)
    assert not missing, f"check ids without a section in docs/checks.md: {missing}"


def test_several_storage_sections_without_storage_setting_is_w004():
    from querystash import plugins as qs_plugins
    from tests.plugins import registered
    from tests.plugins.custom_storage import SectionStoragePlugin

    unset = {k: v for k, v in settings.QUERYSTASH.items() if k != "STORAGE"}
    with registered(SectionStoragePlugin("vault"), "vault"), registered(
        SectionStoragePlugin("attic"), "attic"
    ):
        with override_settings(QUERYSTASH={**unset, "vault": {}}):
            assert _runtime.current.storage.name == "vault"  # its section names it
        assert "querystash.W004" not in ids({**unset, "vault": {}}, pin=False)
        with override_settings(QUERYSTASH={**unset, "vault": {}, "attic": {}}):
            used = _runtime.current.storage.name
        assert used in ("vault", "attic")
        found = messages({**unset, "vault": {}, "attic": {}}, pin=False)
        [warning] = [m for m in found if m.id == "querystash.W004"]
        assert f"{used} is used" in warning.msg
        assert "attic" in warning.msg and "vault" in warning.msg
        assert 'Set QUERYSTASH["STORAGE"]' in warning.hint
        assert "querystash.W004" not in ids({**unset, "vault": {}, "attic": {},
                                             "STORAGE": "attic"})
    assert qs_plugins.pm.get_plugin("vault") is None
