"""Shared fixtures live in tests/fixtures/, one plugin module per concern."""

pytest_plugins = [
    "tests.fixtures.zohosim",
    "tests.fixtures.db",
    "tests.fixtures.celery",
]
