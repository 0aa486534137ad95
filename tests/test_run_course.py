"""Tests of course_lib.tooling.run_course (``make course``) and of the notebook-durations pytest plugin.

The notebooks here are tiny ones written into a temporary folder; each run
starts a real Jupyter kernel (a few seconds each), so the tests run as few
notebooks as they can.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from course_lib.paths import REPO_ROOT
from course_lib.tooling import run_course
from course_lib.tooling.pytest_plugin import NotebookDurations


def assert_offline(page: str, name: str) -> None:
    """No script, style, image, link or import that the browser would fetch from the internet."""
    remote = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]+"""
                        r"""|url\(\s*["']?(?:https?:)?//[^)]+\)"""
                        r"""|import\s*\(?\s*["'](?:https?:)?//[^"']+""", page)
    assert not remote, f"{name}.html fetches {remote[:3]}"
    assert "mathjax" not in page.lower() and "require.min.js" not in page, name


def write_notebook(path, *sources: str) -> None:
    """Write a notebook with one code cell per source string."""
    nb = new_notebook(cells=[new_code_cell(source) for source in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def folders(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    return notebooks, tmp_path / "build"


def test_runs_every_notebook_and_writes_html(folders, capsys, monkeypatch):
    notebooks, build = folders
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)   # the runner sets it, not the caller
    write_notebook(notebooks / "00_hello.ipynb", "print('hello from the course')")
    hello = nbformat.read(notebooks / "00_hello.ipynb", as_version=4)
    hello.cells.insert(0, nbformat.v4.new_markdown_cell(
        "# 00 · Hello\nThe loss $\\log B$ and\n$$\\frac{1}{2B}\\sum_{i=1}^{B} x_i$$\n`$HOME` stays code."))
    hello.cells.append(new_code_cell(
        "import sys, time\nfrom tqdm import tqdm\n"
        "for _ in tqdm(range(3), desc='training', file=sys.stderr, mininterval=0, ascii=True):\n"
        "    time.sleep(0.01)"))
    nbformat.write(hello, notebooks / "00_hello.ipynb")
    write_notebook(notebooks / "01_profile.ipynb",
                   'import os\nassert os.environ["COURSE_PROFILE"] == "smoke"\n'
                   'assert os.environ["COURSE_PROGRESS"] == "text"\n'
                   'assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # item 17: no spinning threads\n'
                   "import course_lib  # importable from the notebooks folder")
    (notebooks / ".ipynb_checkpoints").mkdir()
    write_notebook(notebooks / ".ipynb_checkpoints" / "00_hello-checkpoint.ipynb", "1/0")
    source_before = (notebooks / "00_hello.ipynb").read_text()

    status = run_course.main(["--notebooks", str(notebooks), "--build", str(build),
                              "--profile", "smoke", "--timeout", "120"])

    out = capsys.readouterr().out
    assert status == 0, out
    for name in ("00_hello", "01_profile"):
        assert (build / f"{name}.ipynb").exists()
        assert (build / f"{name}.html").exists()
    executed = nbformat.read(build / "00_hello.ipynb", as_version=4)
    assert "hello from the course" in executed.cells[1].outputs[0]["text"]
    assert "hello from the course" in (build / "00_hello.html").read_text()
    assert (notebooks / "00_hello.ipynb").read_text() == source_before   # source untouched

    # items 6 and 7: pages that work offline, with a title, links and no pink progress bars
    page = (build / "00_hello.html").read_text()
    for name in ("00_hello", "01_profile", "index"):
        assert_offline((build / f"{name}.html").read_text(), name)
    assert "<title>00 · Hello</title>" in page
    assert page.count('class="course-math"') == 2 and "$\\log B$" not in page
    assert "<code>$HOME</code>" in page
    assert 'href="index.html"' in page and 'href="01_profile.html"' in page
    assert 'href="00_hello.html"' in (build / "01_profile.html").read_text()
    stderr = re.findall(r'data-mime-type="application/vnd.jupyter.stderr"[^>]*>\s*<pre>(.*?)</pre>',
                        page, re.S)
    assert len(stderr) == 1 and "3/3" in stderr[0] and "0/3" not in stderr[0]   # the last state only
    assert re.search(r'class="[^"]*course-log[^"]*" data-mime-type="application/vnd.jupyter.stderr"', page)

    index = (build / "index.html").read_text()
    assert "00_hello.html" in index and "01_profile.html" in index
    assert index.count(">ok<") == 2 and "smoke" in index and "checkpoint" not in index
    assert "[1/2] 00_hello.ipynb ... ok in" in out
    assert "[2/2] 01_profile.ipynb ... ok in" in out
    assert "2 of 2 ok" in out


def test_failing_notebook_gives_exit_1_and_failed_entry(folders, capsys):
    notebooks, build = folders
    write_notebook(notebooks / "00_fails.ipynb", "print('before')", "assert 1 == 2, 'wrong sum'",
                   "print('never reached')")
    write_notebook(notebooks / "01_after.ipynb", "print('after')")

    # Default: one weak notebook does not leave the rest unrun; the exit status is still 1,
    # and the run ends with what failed and what to do.
    status = run_course.main(["--notebooks", str(notebooks), "--build", str(build),
                              "--profile", "smoke"])
    out = capsys.readouterr().out
    assert status == 1
    assert "00_fails.ipynb ... failed in" in out and "AssertionError: wrong sum" in out
    assert "01_after.ipynb ... ok in" in out
    assert (build / "00_fails.html").exists()              # the partial page
    assert "before" in (build / "00_fails.html").read_text()
    tail = out[out.index("What failed, and what to do:"):]
    assert "00_fails.ipynb failed: AssertionError: wrong sum" in tail and "run it again" in tail
    index = (build / "index.html").read_text()
    assert ">failed<" in index and ">ok<" in index

    # --stop-on-failure: the rest is listed as skipped.
    status = run_course.main(["--notebooks", str(notebooks), "--build", str(build / "stop"),
                              "--profile", "smoke", "--stop-on-failure"])
    out = capsys.readouterr().out
    assert status == 1
    assert not (build / "stop" / "01_after.ipynb").exists()
    assert ">skipped<" in (build / "stop" / "index.html").read_text()


def test_seeds_fresh_runs_each_seed_in_an_empty_data_folder(folders, capsys, monkeypatch, tmp_path):
    from course_lib import paths
    notebooks, build = folders
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(paths, "SHIPPED_DIR", tmp_path / "data" / "shipped")
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "data" / "cache")
    (tmp_path / "data" / "shipped").mkdir(parents=True)
    (tmp_path / "data" / "shipped" / "clip.json").write_text("{}")
    stale = tmp_path / "data" / "fresh" / "seed1" / "checkpoints"
    stale.mkdir(parents=True)                          # a model left by an earlier fresh run
    write_notebook(notebooks / "06_seeded.ipynb",
                   "import os\nfrom pathlib import Path\n"
                   "from course_lib import paths, selfcheck\nfrom course_lib.profiles import get_profile\n"
                   "p = get_profile()\nassert p.seed == int(os.environ['COURSE_SEED'])\n"
                   "assert not (paths.DATA_DIR / 'checkpoints').exists()   # empty: nothing trained\n"
                   "assert (paths.SHIPPED_DIR / 'clip.json').exists()       # the references are there\n"
                   "check = selfcheck.SelfCheck('06', p)\n"
                   "check.at_least('all four (seen)', 0.5 + p.seed / 10, bar=0.55,\n"
                   "               why='what the model is for')\n"
                   "check.record('minutes', 3.0)\n"
                   "check.done()")
    status = run_course.main(["--notebooks", str(notebooks), "--build", str(build),
                              "--profile", "smoke", "--fresh", "--seeds", "2"])
    out = capsys.readouterr().out
    assert status == 1, out                             # seed 0 measured 0.50 < 0.55
    assert "(seed 0) 06_seeded.ipynb ... failed" in out and "(seed 1) 06_seeded.ipynb ... ok" in out
    assert "(slowest: cell 0 " in out                   # where the time went, from nbclient's timing
    assert not stale.exists()                           # the fresh folder was emptied first
    table = out[out.index("Self-checked numbers per seed"):]
    assert "all four (seen)" in table and "0.500, 0.600" in table and "bar >= 0.550  MISSED" in table
    assert "SelfCheckFailed" in out
    assert "all four (seen): 0.500 (bar >= 0.550) -- what the model is for" in out
    assert (build / "seed0" / "06_seeded.html").exists()
    assert (build / "seed1" / "results" / "06.json").exists()
    import json
    record = json.loads((build / "seeds.json").read_text())
    assert "--seeds 2" in record["command"] and [r["seed"] for r in record["runs"]] == [0, 1]
    assert record["runs"][1]["checks"]["06"]["checks"][0]["value"] == pytest.approx(0.6)


def test_seed_arguments_are_checked(folders, capsys):
    notebooks, build = folders
    write_notebook(notebooks / "00_a.ipynb", "1")
    for bad in (["--seed", "-1"], ["--seed", "1.5"], ["--seeds", "0"], ["--seed", "1", "--seeds", "2"]):
        with pytest.raises(SystemExit):
            run_course.main(["--notebooks", str(notebooks), "--build", str(build), *bad])
        assert "--seed" in capsys.readouterr().err


def test_no_notebooks_is_an_error(folders):
    notebooks, build = folders
    result = subprocess.run(
        [sys.executable, "-m", "course_lib.tooling.run_course", "--notebooks", str(notebooks),
         "--build", str(build)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 1
    assert "No notebooks" in result.stderr


def test_only_selects_by_prefix(folders, capsys):
    notebooks, build = folders
    write_notebook(notebooks / "00_a.ipynb", "1")
    write_notebook(notebooks / "01_b.ipynb", "2")
    assert [p.name for p in run_course.find_notebooks(notebooks, ["01"])] == ["01_b.ipynb"]
    assert run_course.main(["--notebooks", str(notebooks), "--build", str(build),
                            "--only", "99"]) == 1
    assert run_course.main(["--notebooks", str(notebooks), "--build", str(notebooks)]) == 1


# ----------------------------------------------------------------- the pytest plugin

def fake_report(nodeid: str, when: str, outcome: str, duration: float):
    return SimpleNamespace(nodeid=nodeid, when=when, duration=duration,
                           passed=outcome == "passed", failed=outcome == "failed",
                           skipped=outcome == "skipped")


def test_plugin_sums_cells_per_notebook():
    plugin = NotebookDurations()
    for cell in range(3):
        for when in ("setup", "call", "teardown"):
            plugin.pytest_runtest_logreport(
                fake_report(f"notebooks/00_a.ipynb::Cell {cell}", when, "passed", 0.5))
    plugin.pytest_runtest_logreport(fake_report("notebooks/01_b.ipynb::Cell 0", "call", "failed", 2.0))
    plugin.pytest_runtest_logreport(fake_report("tests/test_viz.py::test_bar", "call", "passed", 9.0))

    assert list(plugin.notebooks) == ["notebooks/00_a.ipynb", "notebooks/01_b.ipynb"]
    a = plugin.notebooks["notebooks/00_a.ipynb"]
    assert len(a.cells) == 3 and a.seconds == pytest.approx(4.5) and a.outcome == "passed"
    assert plugin.notebooks["notebooks/01_b.ipynb"].outcome == "failed"
    table = "\n".join(plugin.format_table())
    assert "notebooks/00_a.ipynb" in table and "failed" in table and "6.5" in table


def test_plugin_is_silent_without_notebooks():
    lines = []
    reporter = SimpleNamespace(write_sep=lambda *a, **k: lines.append(a),
                               write_line=lambda *a, **k: lines.append(a))
    plugin = NotebookDurations()
    plugin.pytest_runtest_logreport(fake_report("tests/test_x.py::test_y", "call", "passed", 1.0))
    plugin.pytest_terminal_summary(reporter, 0, None)
    assert lines == []


def test_plugin_prints_table_under_nbval(tmp_path):
    """End to end: pytest --nbval on a real notebook prints the durations table."""
    pytest.importorskip("nbval")
    write_notebook(tmp_path / "00_cells.ipynb", "x = 1", "print(x + 1)")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO_ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "--nbval-lax", "-q",
         str(tmp_path / "00_cells.ipynb")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "notebook durations" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("00_cells.ipynb"))
    assert line.split()[1:2] == ["2"] and line.split()[-1] == "passed"


def test_notebook_times_are_read_at_the_sized_speed():
    """A notebook's seconds scale to the speed the cpu notebooks are sized for, so a 9-minute
    budget is read against the same yardstick on a fast day and a slow one."""
    fast = run_course.NotebookResult("05.ipynb", "ok", seconds=400.0, speed=0.25)
    unmeasured = run_course.NotebookResult("00.ipynb", "ok", seconds=30.0)
    assert fast.sized_seconds == pytest.approx(400.0 * run_course.SIZED_FOR_S_PER_STEP / 0.25)
    assert unmeasured.sized_seconds is None
    table = run_course.format_summary([fast, unmeasured], "cpu")
    assert f"at {run_course.SIZED_FOR_S_PER_STEP} s/step" in table and " 800" in table
    assert "s/step" not in run_course.format_summary([unmeasured], "smoke")
