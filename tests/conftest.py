"""Shared fixtures: every test writes under a temporary data folder, never data/."""
import pytest

from course_lib import paths


@pytest.fixture
def tmp_data(tmp_path, monkeypatch):
    """Point checkpoints and shipped checkpoints at a temporary folder."""
    monkeypatch.setattr(paths, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(paths, "SHIPPED_DIR", tmp_path / "shipped")
    return tmp_path
