from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "bench.benchproject.benchapp"
    label = "bench"  # models are bench.Author, bench.Book...: MODELS {"bench.*": ...}
    default_auto_field = "django.db.models.BigAutoField"
