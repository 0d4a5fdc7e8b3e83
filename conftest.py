# Shared by tests/ and plugins/*/tests/: servers, cache aliases, reset between tests.
pytest_plugins = ["tests.fixtures", "tests.helpers"]
