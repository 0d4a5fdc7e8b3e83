from django.apps import AppConfig


class FuzzappConfig(AppConfig):
    name = "tests.fuzzapp"
    label = "fuzzapp"
