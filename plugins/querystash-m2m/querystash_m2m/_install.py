"""All interception in one place, reversible: ``install()`` / ``uninstall()``."""

from __future__ import annotations

from django.db.models import QuerySet
from django.db.models.fields import related_descriptors
from django.db.models.sql.compiler import SQLDeleteCompiler

from querystash.patching import Patches

from . import _deletes, _inserts, _managers

_patches = Patches()
_patch = _patches.patch


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
    _patches.undo()
    _managers.forget_manager_classes()


def installed() -> bool:
    return bool(_patches)
