"""All interception in one place, reversible: patched through the registry
querystash gives the plugin (``RuntimeHandle.patches``), undone by
querystash's ``uninstall()``."""

from __future__ import annotations

from django.db.models import QuerySet
from django.db.models.fields import related_descriptors
from django.db.models.sql.compiler import SQLDeleteCompiler

from querystash import Patches

from . import _deletes, _inserts, _managers


def install(patches: Patches) -> None:
    """Idempotent."""
    if patches:
        return
    # Undone last-in first: registered first, this runs once the factory is
    # put back, dropping the manager classes it built.
    patches.on_undo(_managers.forget_manager_classes)
    _patch = patches.patch
    own = vars(SQLDeleteCompiler).get("execute_sql")
    _patch(SQLDeleteCompiler, "execute_sql", _deletes.make_execute_sql(SQLDeleteCompiler, own))
    _patch(QuerySet, "bulk_create", _inserts.make_bulk_create(QuerySet.bulk_create))
    _patch(related_descriptors, "create_forward_many_to_many_manager",
           _managers.make_factory(related_descriptors.create_forward_many_to_many_manager))
    _managers.forget_manager_classes()
