# Shared by tests/ and plugins/*/tests/: servers, cache aliases, reset between tests.
from importlib.metadata import entry_points

pytest_plugins = ["tests.fixtures"]
# querystash.testing is a pytest11 plugin of the core; a venv installed before
# it had that entry point loads it from here until reinstalled.
if not any(ep.value == "querystash.testing" for ep in entry_points(group="pytest11")):
    pytest_plugins.insert(0, "querystash.testing")
