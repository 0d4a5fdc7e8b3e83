"""Is the plugin live in the current runtime, and which models are through models."""

from __future__ import annotations

from django.apps import apps

from querystash import RuntimeHandle

try:  # precise tags need querystash-fields; without it the core's table tags apply
    from querystash_fields import capture
except ImportError:  # pragma: no cover - exercised in an environment without it
    capture = None

#: the runtime whose build called our ``querystash_ready``, and its config
runtime: RuntimeHandle | None = None
_config: dict | None = None
#: model -> is it the ``through`` of some many-to-many field
_throughs: dict[type, bool] = {}


def activate(handle: RuntimeHandle) -> None:
    global runtime, _config
    runtime, _config = handle, handle.config
    _throughs.clear()  # models may have been registered since the last build


def active() -> bool:
    """The live runtime was built with this plugin (it may be disabled since)."""
    rt = runtime
    return rt is not None and rt.live


def setting(name: str, default):
    section = (_config or {}).get("m2m") or {}
    return section.get(name, default)


def max_rows() -> int:
    """Most rows of one statement settled one by one; more: the family
    (cheaper than thousands of tags, and as correct)."""
    return int(setting("max_rows", 1000))


def precise(alias: str) -> bool:
    """May through-row writes on ``alias`` be handed to querystash-fields?"""
    return capture is not None and active() and capture.active(alias)


def is_through(model) -> bool:
    found = _throughs.get(model)
    if found is None:
        found = model._meta.auto_created is not False or any(
            field.remote_field.through is model
            for other in apps.get_models()
            for field in other._meta.local_many_to_many
        )
        _throughs[model] = found
    return found
