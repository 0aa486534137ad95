"""Where the course keeps things. Every path the course names starts here.

Defined once so that a notebook, a test and the README agree (tests/test_repo.py
checks that every path named in the course exists).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "DATA_DIR", "CACHE_DIR", "CHECKPOINT_DIR", "SHIPPED_DIR",
           "NOTEBOOK_DIR", "BUILD_DIR"]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Everything generated or trained lives under data/ (gitignored except data/shipped/).
DATA_DIR = Path(os.environ.get("COURSE_DATA_DIR", REPO_ROOT / "data"))
#: Rendered copies of the generated world (safe to delete: they are regenerated).
CACHE_DIR = DATA_DIR / "cache"
#: Checkpoints trained on this machine, one folder per profile.
CHECKPOINT_DIR = DATA_DIR / "checkpoints"
#: Checkpoints an instructor trained once (gpu profile) and ships to learners.
SHIPPED_DIR = DATA_DIR / "shipped"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BUILD_DIR = REPO_ROOT / "build"
