"""Each misconfiguration a newcomer met (issue 19) is a system check whose id
and message name the key and the fix, and none crashes a command.

In process: Django's check framework under ``override_settings``. In a
subprocess: ``manage.py check`` of a project whose settings end with
``djp.settings(globals())``, with every plugin installed (the suite's
environment), where the complaint was a crash or a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core import checks as django_checks
from django.test import override_settings

from querystash import Setting, SettingsSection, _runtime, plugins
from tests.helpers import system_checks
from tests.plugins import registered


def messages(value) -> list:
    with override_settings(QUERYSTASH=value):
        found = system_checks()
    return [m for m in found if m.id.startswith("querystash.")]


def only(value, expected_id: str):
    found = messages(value)
    assert [m.id for m in found] == [expected_id], [str(m) for m in found]
    return found[0]


def with_(**keys) -> dict:
    return {**settings.QUERYSTASH, **keys}


# -- plugin sections: fields and m2m are validated -------------------------------------------


def test_fields_misspelled_key_is_e006_naming_the_key_and_the_right_one():
    error = only(with_(fields={"slotz": 16}), "querystash.E006")
    assert error.msg == 'QUERYSTASH["fields"] has an unknown key "slotz".'
    assert error.hint == 'Did you mean "slots"?'


def test_fields_slots_zero_is_e003_saying_what_is_expected():
    error = only(with_(fields={"slots": 0}), "querystash.E003")
    assert error.msg == 'QUERYSTASH["fields"]["slots"] is 0; expected an int of at least 1.'
    assert error.hint == ('Change QUERYSTASH["fields"]["slots"] to an int of at least 1, '
                          "or remove it to use the default (16).")


def test_fields_slots_of_the_wrong_type_names_the_key_not_e010():
    # Used to be an E010 from FieldStrategy's int("abc"), naming no key.
    error = only(with_(fields={"slots": "abc"}), "querystash.E003")
    assert error.msg == "QUERYSTASH[\"fields\"][\"slots\"] is 'abc'; expected an int of at least 1."


def test_m2m_max_rows_negative_is_e003():
    error = only(with_(m2m={"max_rows": -1}), "querystash.E003")
    assert error.msg == 'QUERYSTASH["m2m"]["max_rows"] is -1; expected an int of at least 0.'


def test_a_wrong_plugin_key_turns_caching_off_and_hooks_get_the_default():
    from querystash_fields import FieldStrategy

    with override_settings(QUERYSTASH=with_(fields={"slots": "abc"})):
        rt = _runtime.current
        assert not rt.enabled
        assert any('QUERYSTASH["fields"]["slots"]' in p for p in rt.problems)
        [strategy] = [s for s in rt.strategies if isinstance(s, FieldStrategy)]
        assert strategy.registry.slots == 16  # the hook never saw "abc"
    assert _runtime.current.enabled


# -- DISABLED_PLUGINS ------------------------------------------------------------------


def test_unknown_disabled_plugin_is_e008_with_the_right_name():
    error = only(with_(DISABLED_PLUGINS=["querystash-fields"]), "querystash.E008")
    assert error.msg == ("QUERYSTASH[\"DISABLED_PLUGINS\"] names 'querystash-fields', which is "
                         "not an installed plugin or plugin section: it disables nothing.")
    assert error.hint.startswith('Did you mean "fields"? Installed plugins: ')
    assert "m2m" in error.hint


class _Depth:
    """A plugin named unlike its section, as the template's are by default."""

    def __init__(self):
        self.built = 0

    @plugins.hookspecs.hookimpl
    def querystash_settings_section(self):
        return SettingsSection("depth", {"levels": Setting(3, int, minimum=1)})

    @plugins.hookspecs.hookimpl
    def querystash_invalidation_strategy(self, config):
        self.built += 1


def test_disabling_a_plugin_by_its_section_name_disables_it():
    plugin = _Depth()
    with registered(plugin, "querystash_depth"):
        with override_settings(QUERYSTASH=with_(DISABLED_PLUGINS=["depth"])):
            built = plugin.built
            _runtime.rebuild()
            assert plugin.built == built, "the disabled plugin's hook was called"
            assert "querystash_depth" in plugins.disabled_names(_runtime.current.config)
            assert messages(with_(DISABLED_PLUGINS=["depth"])) == []
        built = plugin.built
        _runtime.rebuild()
        assert plugin.built == built + 1  # the control: enabled, its hook is called


class _BrokenSection:
    @plugins.hookspecs.hookimpl
    def querystash_settings_section(self):
        raise RuntimeError("schema bug")


def test_a_plugin_whose_schema_hook_raises_is_e010_and_caching_is_off():
    with registered(_BrokenSection(), "broken_section"):
        found = messages(settings.QUERYSTASH)
        assert [m.id for m in found] == ["querystash.E010"], [str(m) for m in found]
        assert "'broken_section'" in found[0].msg and "schema bug" in found[0].msg
        assert not _runtime.current.enabled
        assert messages(with_(DISABLED_PLUGINS=["broken_section"])) == []
    assert _runtime.current.enabled


# -- sections under the wrong name --------------------------------------------------------


@pytest.mark.parametrize("name", ["feilds", "querystash_fields", "querystash-fields"])
def test_a_section_under_the_wrong_name_is_w002_suggesting_the_right_one(name):
    warning = only(with_(**{name: {"slots": 32}}), "querystash.W002")
    assert warning.msg == f'QUERYSTASH["{name}"] configures no installed plugin: it is ignored.'
    assert warning.hint.startswith('Did you mean "fields"?')


def test_an_upper_case_section_is_e002_suggesting_the_section():
    error = only(with_(FIELDS={"slots": 32}), "querystash.E002")
    assert error.hint == 'Plugin sections are lower case: did you mean "fields"?'


def test_w002_lists_sections_not_the_builtin_modules():
    warning = only(with_(nosuchplugin={}), "querystash.W002")
    assert "default_" not in warning.hint
    assert "Installed plugin sections: " in warning.hint
    listed = warning.hint.split("Installed plugin sections: ")[1].rstrip(".").split(", ")
    assert {"django", "fields", "m2m", "redis", "memcached"} <= set(listed)


# -- messages ----------------------------------------------------------------------------


def test_model_timeout_zero_says_a_positive_int():
    error = only(with_(MODELS={"testapp.*": {"timeout": 0}}), "querystash.E003")
    assert error.msg == ('QUERYSTASH["MODELS"]["testapp.*"]["timeout"] is 0; '
                         "expected a positive int (seconds).")


def test_storage_not_installed_lists_the_installed_storages():
    found = messages(with_(STORAGE="rediss"))
    assert [m.id for m in found] == ["querystash.E009"], [str(m) for m in found]
    assert "'rediss'" in found[0].msg
    assert "Installed storages: django, " in found[0].msg and "redis" in found[0].msg
    assert 'Did you mean "redis"?' in found[0].msg
    assert "Fix or uninstall the plugin" not in found[0].hint


# -- no store the user did not configure ----------------------------------------------------


def test_storage_plugins_installed_but_not_named_use_the_builtin_store_and_say_why():
    unset = {k: v for k, v in settings.QUERYSTASH.items() if k != "STORAGE"}
    with override_settings(QUERYSTASH=unset):
        assert _runtime.current.storage.name == "django"
    [info] = messages(unset)
    assert info.id == "querystash.I001" and info.level == django_checks.INFO
    assert "built-in store" in info.msg and 'QUERYSTASH["STORAGE"] is not set' in info.msg
    assert "redis" in info.msg and "memcached" in info.msg
    assert 'QUERYSTASH["STORAGE"] = "django"' in info.hint
    assert messages({**unset, "STORAGE": "django"}) == []  # chosen: nothing to say


def test_a_storage_section_names_the_store():
    unset = {k: v for k, v in settings.QUERYSTASH.items() if k != "STORAGE"}
    with override_settings(QUERYSTASH={**unset, "redis": {"url": "redis://127.0.0.1:1/0"}}):
        assert _runtime.current.storage.name == "redis"


# -- manage.py check in a subprocess: no crash, no traceback ---------------------------------

PROJECT_SETTINGS = """\
import djp

SECRET_KEY = "not-secret"
DEBUG = True
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes"]
MIDDLEWARE = []
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}}}
QUERYSTASH = {querystash}

djp.settings(globals())
"""


def manage_py_check(tmp_path, querystash: str) -> subprocess.CompletedProcess:
    (tmp_path / "qs_settings.py").write_text(PROJECT_SETTINGS.format(querystash=querystash))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUERYSTASH")}
    env.update(DJANGO_SETTINGS_MODULE="qs_settings", PYTHONPATH=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-m", "django", "check"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=False)


def test_a_non_dict_setting_is_e001_not_a_crash_in_the_djp_hooks(tmp_path):
    proc = manage_py_check(tmp_path, '"redis://127.0.0.1"')
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in proc.stderr.replace("SystemCheckError", ""), output
    assert "AttributeError" not in output
    assert "(querystash.E001) QUERYSTASH must be a dict." in output


def test_a_bad_redis_section_is_one_check_message_without_a_traceback(tmp_path):
    proc = manage_py_check(tmp_path, '{"redis": {"socket_timeout": -1}}')
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    assert ('(querystash.E003) QUERYSTASH["redis"]["socket_timeout"] is -1; expected seconds '
            "(a positive number).") in output
    assert "querystash.E010" not in output


def test_a_fresh_project_with_every_plugin_uses_the_builtin_store(tmp_path):
    proc = manage_py_check(tmp_path, "{}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "(querystash.I001) querystash uses its built-in store" in output
    assert "Traceback" not in output
    assert "querystash.W004" not in output  # several plugins installed, none configured
