"""A notebook's closing self-check: every measured number against its bar, all at once.

Each notebook ends with a cell that asserts what it measured. Written with this module,
a miss says which number missed which bar and why that matters, every miss is listed (not
only the first), and the numbers are kept: when ``COURSE_RESULTS_DIR`` is set (the headless
runner, ``make course``, sets it) the check writes ``<notebook>.json`` there, so a run over
several seeds (``make course ARGS="--only 06 --fresh --seeds 2"``) ends with each number's
spread beside its bar::

    check = SelfCheck("06", profile)
    check.at_least("all four right (seen)", row["all right (seen)"], bar=0.30,
                   why="the captions' four attributes together are what the model is for")
    check.at_most("FD", row["FD"], bar=600)
    check.done()        # AssertionError listing every miss, after writing the numbers

A bar of ``None`` records the number without asserting it (e.g. a measure a profile is too
small to show reliably). A bar is a measured margin below what a profile reliably reaches; on a
profile no run has measured yet (:data:`MEASURED_PROFILES`: the gpu profile, until a GPU run
sets them) the bars are the targets, and a miss prints a warning with the number instead of
failing.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Check", "SelfCheck", "SelfCheckFailed", "RESULTS_ENV", "MEASURED_PROFILES", "read_results"]

#: The folder the checks write their numbers to (unset: nothing is written).
RESULTS_ENV = "COURSE_RESULTS_DIR"

#: Profiles whose bars come from measured runs; on any other a miss is a warning (its bars are
#: the targets until a run on that hardware measures them).
MEASURED_PROFILES = ("smoke", "cpu")


class SelfCheckFailed(AssertionError):
    """One or more measured numbers missed their bars (the message lists each)."""


@dataclass
class Check:
    name: str
    value: float
    bar: float | None
    direction: str          # ">=" or "<="
    why: str = ""
    hint: str = ""

    @property
    def passed(self) -> bool:
        if self.bar is None:
            return True
        if not math.isfinite(self.value):
            return False
        return self.value >= self.bar if self.direction == ">=" else self.value <= self.bar

    def line(self) -> str:
        bar = "recorded, no bar" if self.bar is None else f"bar {self.direction} {_fmt(self.bar)}"
        return f"{self.name}: {_fmt(self.value)} ({bar})"


def _fmt(v) -> str:
    if isinstance(v, float) and abs(v) < 10:
        return f"{v:.3f}"
    return f"{v:,.0f}" if isinstance(v, (int, float)) else str(v)


class SelfCheck:
    """The measured numbers of one notebook's run and their bars (see the module docstring)."""

    def __init__(self, notebook: str, profile, *, hint: str = ""):
        self.notebook = str(notebook)
        self.profile = getattr(profile, "name", str(profile))
        self.seed = int(getattr(profile, "seed", 0))
        self.hint = hint             # said once under the misses, e.g. what to run again
        self.checks: list[Check] = []
        self.provisional = self.profile not in MEASURED_PROFILES   # bars not measured: warn, do not fail

    def at_least(self, name: str, value, bar: float | None, *, why: str = "", hint: str = "") -> None:
        self.checks.append(Check(name, float(value), None if bar is None else float(bar), ">=", why, hint))

    def at_most(self, name: str, value, bar: float | None, *, why: str = "", hint: str = "") -> None:
        self.checks.append(Check(name, float(value), None if bar is None else float(bar), "<=", why, hint))

    def record(self, name: str, value, *, why: str = "") -> None:
        """A number kept beside the checks (e.g. training minutes), never asserted."""
        self.checks.append(Check(name, float(value), None, ">=", why))

    @property
    def misses(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def write(self) -> Path | None:
        folder = os.environ.get(RESULTS_ENV, "").strip()
        if not folder:
            return None
        path = Path(folder) / f"{self.notebook}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"notebook": self.notebook, "profile": self.profile, "seed": self.seed,
                "passed": not self.misses, "checks": [asdict(c) for c in self.checks]}
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
        return path

    def report(self) -> str:
        lines = [f"Self-check, profile {self.profile} (seed {self.seed}):"]
        if self.provisional:
            lines[0] += " its bars are targets no run has measured yet: a miss is a warning"
        for c in self.checks:
            lines.append(f"  {'ok  ' if c.passed else ('WARN' if self.provisional else 'MISS')} {c.line()}")
        return "\n".join(lines)

    def done(self) -> None:
        """Print every number against its bar, write them (``COURSE_RESULTS_DIR``), and raise
        :class:`SelfCheckFailed` naming each miss, why it matters and what to do."""
        self.write()
        print(self.report())
        misses = self.misses
        if not misses:
            print(f"All {sum(c.bar is not None for c in self.checks)} checks passed.")
            return
        parts = []
        for c in misses:
            text = f"{c.line()}"
            if c.why:
                text += f" -- {c.why}"
            if c.hint:
                text += f" {c.hint}"
            parts.append(text)
        message = f"{len(misses)} of {len(self.checks)} self-checks missed: " + "; ".join(parts)
        if self.hint:
            message += f". {self.hint}"
        if self.provisional:
            import warnings
            warnings.warn(f"profile {self.profile}: {message} (these bars are targets not yet measured on "
                          f"this profile; the numbers above are what this run measured)", stacklevel=2)
            return
        raise SelfCheckFailed(message)


def read_results(folder: str | Path) -> dict[str, dict]:
    """``{notebook: results}`` of every check file in ``folder`` (see :meth:`SelfCheck.write`)."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        out[data.get("notebook", path.stem)] = data
    return out
