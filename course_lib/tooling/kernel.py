"""The course's Jupyter kernel and the environment every course process starts with.

On a 2-core laptop, PyTorch's OpenMP threads *spin* while they wait for work;
beside any other busy process that turns into a many-fold slowdown (measured with
notebook 01's smoke CLIP: 0.052 s/step on a quiet machine, 0.176 s/step beside
one busy process, 0.086 s/step with ``OMP_WAIT_POLICY=PASSIVE``). OpenMP reads the
policy once, when PyTorch loads it, so it must be in the environment *before*
Python starts: the course sets it wherever it starts Python --

* the Makefile exports it for every target;
* the notebooks run in the ``clip-course`` kernel, whose spec
  (``course_lib/tooling/jupyter/kernels/clip-course/kernel.json``) sets it; ``make lab``
  installs that spec into the virtual environment (``python -m course_lib.tooling.kernel``);
* the headless runner (:mod:`course_lib.tooling.run_course`) and pytest (through
  :mod:`course_lib.tooling.pytest_plugin` and ``tests/conftest.py``) set it and find the
  spec in the repository, so they need no installed kernel.

A value you set yourself (``export OMP_WAIT_POLICY=ACTIVE``) is kept everywhere
but in the kernel, whose spec always sets the passive policy.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["KERNEL_NAME", "COURSE_ENV", "SPEC_DIR", "JUPYTER_DATA_DIR", "apply_env",
           "make_spec_findable", "install"]

KERNEL_NAME = "clip-course"
#: the jupyter data folder in the repository that holds ``kernels/clip-course``
JUPYTER_DATA_DIR = Path(__file__).resolve().parent / "jupyter"
SPEC_DIR = JUPYTER_DATA_DIR / "kernels" / KERNEL_NAME
#: environment variables every course process starts with (the kernel spec holds the same)
COURSE_ENV: dict[str, str] = dict(json.loads((SPEC_DIR / "kernel.json").read_text())["env"])


def apply_env(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Add :data:`COURSE_ENV` to ``env`` (default ``os.environ``) where not already set."""
    env = os.environ if env is None else env
    for key, value in COURSE_ENV.items():
        env.setdefault(key, value)
    return env


def make_spec_findable(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Put the repository's kernel specs on ``JUPYTER_PATH`` (default: ``os.environ``), so
    Jupyter finds the ``clip-course`` kernel without an install."""
    env = os.environ if env is None else env
    parts = [p for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    if str(JUPYTER_DATA_DIR) not in parts:
        env["JUPYTER_PATH"] = os.pathsep.join([str(JUPYTER_DATA_DIR), *parts])
    return env


def install(prefix: str | None = None) -> str:
    """Install the ``clip-course`` kernel spec into ``prefix`` (default: this Python's
    environment, e.g. ``.venv``); returns where it went. ``make lab`` calls it."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KernelSpecManager().install_kernel_spec(str(SPEC_DIR), KERNEL_NAME,
                                                   prefix=prefix or sys.prefix)


if __name__ == "__main__":
    print(f"Installed the '{KERNEL_NAME}' Jupyter kernel in {install()}")
