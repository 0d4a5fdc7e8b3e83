from django.apps import AppConfig


class QuerystashConfig(AppConfig):
    name = "querystash"
    verbose_name = "querystash"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from ._install import install

        install()
