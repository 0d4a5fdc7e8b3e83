"""All interception in one place, reversible: ``install()`` / ``uninstall()``."""

from __future__ import annotations

from django.db.models import QuerySet
from django.db.models.fields import related_descriptors
from django.db.models.sql.compiler import SQLDeleteCompiler

from . import _deletes, _inserts, _managers

_ABSENT = object()
_patches: list[tuple[object, str, object]] = []  # (owner, name, original or _ABSENT)


def _patch(owner, name: str, new) -> None:
    _patches.append((owner, name, vars(owner).get(name, _ABSENT)))
    setattr(owner, name, new)


def install() -> None:
    """Idempotent."""
    if _patches:
        return
    own = vars(SQLDeleteCompiler).get("execute_sql")
    _patch(SQLDeleteCompiler, "execute_sql", _deletes.make_execute_sql(SQLDeleteCompiler, own))
    _patch(QuerySet, "bulk_create", _inserts.make_bulk_create(QuerySet.bulk_create))
    _patch(related_descriptors, "create_forward_many_to_many_manager",
           _managers.make_factory(related_descriptors.create_forward_many_to_many_manager))
    _managers.forget_manager_classes()


def uninstall() -> None:
    while _patches:
        owner, name, original = _patches.pop()
        if original is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _managers.forget_manager_classes()


def installed() -> bool:
    return bool(_patches)
