from django.apps import AppConfig


class FieldtypesConfig(AppConfig):
    """Every field type Django ships, for querystash-fields' tests."""

    name = "tests.fieldtypes"
    label = "fieldtypes"
