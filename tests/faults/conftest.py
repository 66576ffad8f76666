"""The fault suite runs in full only under `make faults` (MMSEARCH_FAULTS=full); `make test`
(and CI) runs its short scenario alone."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MMSEARCH_FAULTS") == "full":
        return
    skip = pytest.mark.skip(reason="full fault suite: run `make faults` (MMSEARCH_FAULTS=full)")
    for item in items:
        if "full_faults" in item.keywords:
            item.add_marker(skip)
