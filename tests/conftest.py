"""Shared test setup. Network tests need root: the suite is meant to run as root (CI does)."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for namespaces")
    for item in items:
        if "net" in item.keywords:
            item.add_marker(skip)
