"""Fixtures of the training tests (the trainer, run directories, checkpoints)."""
import pytest
from helpers import tiny_splits


@pytest.fixture(scope="module")
def data():
    """``(train, valid)`` of :func:`helpers.tiny_splits`, once per module."""
    return tiny_splits()
