"""A plugin module that fails to import, as a plugin with a missing dependency does."""

raise ImportError("querystash-broken needs the 'nonexistent_dependency' package")
