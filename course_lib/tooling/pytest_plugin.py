"""A pytest plugin that prints how long each notebook took under ``pytest --nbval``.

Loaded for every pytest run by ``addopts = "-p course_lib.pytest_plugin"`` in
pyproject.toml. nbval turns each notebook cell into one test item with an id
like ``<notebook>.ipynb::Cell 3``; this plugin adds up the durations of
those items (setup, call and teardown) per notebook and prints a table at the
end of the run::

    ========================= notebook durations =========================
    notebook                  cells   seconds  outcome
    00_example.ipynb             12      14.2  passed
    01_example.ipynb             25      93.0  failed

When no notebook ran (e.g. ``pytest tests``) it prints nothing.

Loading it also sets the course's environment (``OMP_WAIT_POLICY=PASSIVE``, see
:mod:`course_lib.tooling.kernel`) and puts the ``clip-course`` kernel spec on ``JUPYTER_PATH``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import kernel as _kernel

# Every pytest run (unit tests and nbval's notebook kernels, which inherit this environment)
# gets the course's environment -- OpenMP threads that sleep instead of spinning -- before
# anything loads PyTorch, and finds the course's kernel spec without an install.
_kernel.apply_env()
_kernel.make_spec_findable()

__all__ = ["NotebookTiming", "NotebookDurations", "pytest_configure"]

PLUGIN_NAME = "course-notebook-durations"


@dataclass
class NotebookTiming:
    """The summed test reports of one notebook's cells."""
    cells: set[str] = field(default_factory=set)   # node ids of the cells seen
    seconds: float = 0.0
    failed: bool = False
    passed: bool = False

    @property
    def outcome(self) -> str:
        """"failed" if any cell failed, else "passed" if any passed, else "skipped"."""
        if self.failed:
            return "failed"
        if self.passed:
            return "passed"
        return "skipped"


class NotebookDurations:
    """Collects per-notebook durations from pytest's reports and prints them."""

    def __init__(self) -> None:
        #: notebook path (the node id before "::") -> its timing, in the order first seen
        self.notebooks: dict[str, NotebookTiming] = {}

    def pytest_runtest_logreport(self, report) -> None:
        """Called for the setup, call and teardown phase of every test item."""
        path = report.nodeid.split("::", 1)[0]
        if not path.endswith(".ipynb"):
            return
        timing = self.notebooks.setdefault(path, NotebookTiming())
        timing.cells.add(report.nodeid)
        timing.seconds += getattr(report, "duration", 0.0) or 0.0
        if report.failed:
            timing.failed = True
        elif report.passed and report.when == "call":
            timing.passed = True

    def format_table(self) -> list[str]:
        """The table lines (header, one line per notebook, total)."""
        width = max([len("notebook")] + [len(path) for path in self.notebooks])
        lines = [f"{'notebook':<{width}}  {'cells':>5}  {'seconds':>8}  outcome"]
        for path, timing in self.notebooks.items():
            lines.append(f"{path:<{width}}  {len(timing.cells):>5}  {timing.seconds:>8.1f}  "
                         f"{timing.outcome}")
        total = sum(timing.seconds for timing in self.notebooks.values())
        lines.append(f"{'total':<{width}}  {'':>5}  {total:>8.1f}")
        return lines

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config) -> None:
        """Print the table at the end of the run; nothing if no notebook ran."""
        if not self.notebooks:
            return
        terminalreporter.write_sep("=", "notebook durations")
        for line in self.format_table():
            terminalreporter.write_line(line)


def pytest_configure(config) -> None:
    """Register one collector per pytest run (so that runs never share numbers); nbval
    runs every notebook in the course kernel unless told another kernel."""
    option = config.option
    if hasattr(option, "nbval_kernel_name") and not option.nbval_kernel_name \
            and not getattr(option, "nbval_current_env", False) and not getattr(option, "current_env", False):
        option.nbval_kernel_name = _kernel.KERNEL_NAME
    if not config.pluginmanager.has_plugin(PLUGIN_NAME):
        config.pluginmanager.register(NotebookDurations(), PLUGIN_NAME)
