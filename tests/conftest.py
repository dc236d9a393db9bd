from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_tree


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """A read-only tiny synthetic tree shared by tests that do not modify it."""
    return make_tree(tmp_path_factory.mktemp("data") / "tree")
