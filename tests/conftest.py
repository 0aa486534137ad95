"""Shared fixtures: every test writes under a temporary data folder, never data/."""
import pytest

from course_lib import paths
from course_lib.tooling import kernel

# OpenMP threads that sleep while they wait (a busy 2-core machine otherwise slows many-fold);
# course_lib.tooling.pytest_plugin already did it for every pytest run, this keeps it for a run without it.
kernel.apply_env()


@pytest.fixture
def tmp_data(tmp_path, monkeypatch):
    """Point checkpoints and shipped checkpoints at a temporary folder."""
    monkeypatch.setattr(paths, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(paths, "SHIPPED_DIR", tmp_path / "shipped")
    return tmp_path
