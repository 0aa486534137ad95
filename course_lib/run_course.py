"""Run every notebook of the course headless and publish the results as HTML.

Used by ``make course``::

    python -m course_lib.run_course                    # profile from COURSE_PROFILE or detected
    python -m course_lib.run_course --profile smoke    # the quick CI sizes
    python -m course_lib.run_course --only 00 02       # notebooks whose names start so
    python -m course_lib.run_course --keep-going       # do not stop at the first failure

For each notebook in ``notebooks/`` (sorted by name) it starts a fresh
``clip-course`` kernel (:mod:`course_lib.kernel`) in the notebooks folder, runs every cell, and writes

* ``build/<name>.ipynb`` -- the notebook with its outputs,
* ``build/<name>.html``  -- the same as a web page that needs no internet (maths
  rendered at build time), titled, linked to the index and its neighbours
  (:mod:`course_lib.pages`),
* ``build/index.html``   -- one line per notebook: status, duration, profile.

The source notebooks are never modified. The kernel gets ``COURSE_PROFILE``
(the chosen profile), ``OMP_WAIT_POLICY=PASSIVE`` and ``COURSE_PROGRESS=text`` (plain-text progress, no
widgets) in its environment, and the repository root on ``PYTHONPATH`` so
that ``import course_lib`` works from the notebooks folder.

The exit status is 0 when every notebook ran, 1 otherwise. A failed notebook
still gets its partial HTML page (the outputs up to the failing cell, with the
error). Without ``--keep-going`` the run stops there.
"""
from __future__ import annotations

import argparse
import datetime
import html
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from course_lib import kernel
from course_lib.paths import BUILD_DIR, NOTEBOOK_DIR, REPO_ROOT
from course_lib.profiles import PROFILE_NAMES, UnknownProfileError, get_profile

__all__ = ["NotebookResult", "find_notebooks", "kernel_env", "run_notebook", "write_index",
           "format_summary", "main", "DEFAULT_TIMEOUT_S"]

#: The longest one cell may run (seconds) before the notebook counts as failed.
DEFAULT_TIMEOUT_S = 1800


@dataclass
class NotebookResult:
    """What happened to one notebook."""
    name: str                 # e.g. "00_welcome.ipynb"
    status: str               # "ok", "failed" or "skipped" (not run after an earlier failure)
    seconds: float = 0.0      # wall-clock time, kernel start included
    error: str = ""           # a one-line reason when failed
    html_name: str = ""       # the HTML page in the build folder ("" if none was written)


def find_notebooks(notebook_dir: Path, only: list[str] | None = None) -> list[Path]:
    """The notebooks to run, sorted by name.

    Args:
        notebook_dir: the folder holding the ``.ipynb`` files (not searched recursively,
            so ``.ipynb_checkpoints/`` is never included).
        only: name prefixes, e.g. ``["00", "02"]``; ``None`` keeps every notebook.
    """
    notebooks = sorted(p for p in Path(notebook_dir).glob("*.ipynb") if p.is_file())
    if only:
        notebooks = [p for p in notebooks if any(p.name.startswith(prefix) for prefix in only)]
    return notebooks


def kernel_env(profile_name: str) -> dict[str, str]:
    """The environment of each notebook's kernel: ours plus the course's switches."""
    env = dict(os.environ)
    kernel.apply_env(env)                 # OMP_WAIT_POLICY=PASSIVE unless set otherwise
    kernel.make_spec_findable(env)
    env["COURSE_PROFILE"] = profile_name
    env["COURSE_PROGRESS"] = "text"
    old_path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + old_path if old_path else "")
    return env


def _short_error(exc: Exception) -> str:
    """One line saying why a notebook failed (the cell's exception if there was one)."""
    ename = getattr(exc, "ename", None)       # set by nbclient's CellExecutionError
    if ename:
        evalue = getattr(exc, "evalue", "") or ""
        text = f"{ename}: {evalue}" if evalue else ename
    else:
        text = f"{type(exc).__name__}: {exc}"
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first_line[:300]


def _write_html(nb, html_path: Path, prev_page: str | None = None,
                next_page: str | None = None) -> None:
    """Export an (executed) notebook to one offline HTML page (course_lib.pages)."""
    from course_lib.pages import export_html
    export_html(nb, html_path, prev_page=prev_page, next_page=next_page)


def run_notebook(path: Path, build_dir: Path, profile_name: str,
                 timeout: int | None = DEFAULT_TIMEOUT_S, *, prev_page: str | None = None,
                 next_page: str | None = None) -> NotebookResult:
    """Execute one notebook in a fresh kernel; write its .ipynb and .html to ``build_dir``.

    Args:
        path: the source notebook (read, never written).
        build_dir: where ``<name>.ipynb`` and ``<name>.html`` go.
        profile_name: the value of ``COURSE_PROFILE`` in the kernel.
        timeout: the longest one cell may run, in seconds; 0 or ``None`` for no limit.
        prev_page, next_page: the pages of the notebooks before and after it (linked
            from the page, with the index).

    Returns:
        A :class:`NotebookResult`; an error in the notebook is reported there, not raised.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    build_dir = Path(build_dir)
    nb = nbformat.read(path, as_version=4)
    kernel.make_spec_findable()           # this process looks the kernel spec up
    client = NotebookClient(
        nb,
        timeout=timeout if timeout else None,
        kernel_name=kernel.KERNEL_NAME,       # the course kernel (course_lib/kernel.py)
        resources={"metadata": {"path": str(path.parent)}},   # the kernel's working folder
    )
    status, error = "ok", ""
    start = time.perf_counter()
    try:
        client.execute(env=kernel_env(profile_name))
    except Exception as exc:   # a failing cell, a timeout, a dead kernel: all mean "failed"
        status, error = "failed", _short_error(exc)
    seconds = time.perf_counter() - start

    # The notebook object now holds the outputs of every cell that ran.
    nbformat.write(nb, build_dir / path.name)
    html_name = path.with_suffix(".html").name
    try:
        _write_html(nb, build_dir / html_name, prev_page, next_page)
    except Exception as exc:   # pragma: no cover - a broken export should not hide the result
        html_name = ""
        if status == "ok":
            status, error = "failed", f"HTML export failed: {_short_error(exc)}"
    return NotebookResult(name=path.name, status=status, seconds=seconds, error=error,
                          html_name=html_name)


def write_index(results: list[NotebookResult], build_dir: Path, profile_name: str) -> Path:
    """Write ``build_dir/index.html``: one table row per notebook. Returns its path."""
    rows = []
    for r in results:
        name = html.escape(r.name)
        link = f'<a href="{html.escape(r.html_name)}">{name}</a>' if r.html_name else name
        seconds = f"{r.seconds:.1f}" if r.status != "skipped" else ""
        rows.append(
            f'<tr class="{r.status}"><td>{link}</td><td>{r.status}</td>'
            f'<td class="num">{seconds}</td><td>{html.escape(profile_name)}</td>'
            f"<td>{html.escape(r.error)}</td></tr>")
    total = sum(r.seconds for r in results)
    n_ok = sum(r.status == "ok" for r in results)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Course notebooks ({html.escape(profile_name)})</title>
<style>
  body {{ font-family: sans-serif; margin: 2em; }}
  table {{ border-collapse: collapse; }}
  th, td {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }}
  td.num {{ text-align: right; }}
  tr.ok td:nth-child(2) {{ color: #080; }}
  tr.failed td:nth-child(2) {{ color: #c00; font-weight: bold; }}
  tr.skipped td:nth-child(2) {{ color: #888; }}
</style>
</head>
<body>
<h1>Course notebooks</h1>
<p>Profile <b>{html.escape(profile_name)}</b>, run {stamp}:
{n_ok} of {len(results)} ok, {total:.1f} s in all.</p>
<table>
<tr><th>notebook</th><th>status</th><th>seconds</th><th>profile</th><th>error</th></tr>
{chr(10).join(rows)}
</table>
</body>
</html>
"""
    index = Path(build_dir) / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def format_summary(results: list[NotebookResult], profile_name: str) -> str:
    """A plain-text table of the results, printed at the end of a run."""
    width = max([len("notebook")] + [len(r.name) for r in results])
    lines = [f"{'notebook':<{width}}  {'status':<7}  {'seconds':>8}",
             f"{'-' * width}  {'-' * 7}  {'-' * 8}"]
    for r in results:
        seconds = f"{r.seconds:8.1f}" if r.status != "skipped" else f"{'':>8}"
        lines.append(f"{r.name:<{width}}  {r.status:<7}  {seconds}")
    total = sum(r.seconds for r in results)
    n_ok = sum(r.status == "ok" for r in results)
    lines.append(f"{n_ok} of {len(results)} ok, {total:.1f} s in all, profile {profile_name}")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.run_course",
        description="Run the course notebooks headless and write HTML pages to the build folder.")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                        help="course profile (default: COURSE_PROFILE, else detected)")
    parser.add_argument("--only", nargs="+", metavar="PREFIX", default=None,
                        help="run only notebooks whose names start with these, e.g. --only 00 01")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"longest time one cell may run; 0 for no limit (default {DEFAULT_TIMEOUT_S})")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a failed notebook, run the remaining ones anyway")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR, metavar="DIR",
                        help="folder of the source notebooks (default: notebooks/)")
    parser.add_argument("--build", type=Path, default=BUILD_DIR, metavar="DIR",
                        help="folder for the executed notebooks and HTML (default: build/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks as the command line asks; return the exit status (0 = all ok)."""
    args = _parse_args(argv)
    try:
        profile_name = get_profile(args.profile).name
    except UnknownProfileError as exc:      # e.g. COURSE_PROFILE=fast in the environment
        print(exc, file=sys.stderr)
        return 1
    notebook_dir = args.notebooks.resolve()
    build_dir = args.build.resolve()
    if build_dir == notebook_dir:
        print("The build folder must differ from the notebooks folder "
              "(the source notebooks are never overwritten).", file=sys.stderr)
        return 1

    notebooks = find_notebooks(notebook_dir, args.only)
    if not notebooks:
        wanted = f" starting with {' or '.join(args.only)}" if args.only else ""
        print(f"No notebooks{wanted} in {notebook_dir}: nothing to run.", file=sys.stderr)
        return 1

    build_dir.mkdir(parents=True, exist_ok=True)
    print(f"Running {len(notebooks)} notebook(s) from {notebook_dir} with profile "
          f"{profile_name!r}; results in {build_dir}", flush=True)
    results: list[NotebookResult] = []
    stopped = False
    for i, path in enumerate(notebooks, start=1):
        if stopped:
            results.append(NotebookResult(name=path.name, status="skipped"))
            continue
        print(f"[{i}/{len(notebooks)}] {path.name} ... ", end="", flush=True)
        pages = [p.with_suffix(".html").name for p in notebooks]
        result = run_notebook(path, build_dir, profile_name, timeout=args.timeout,
                              prev_page=pages[i - 2] if i > 1 else None,
                              next_page=pages[i] if i < len(pages) else None)
        results.append(result)
        print(f"{result.status} in {result.seconds:.1f} s", flush=True)
        if result.status != "ok":
            print(f"    {result.error}", flush=True)
            if result.html_name:
                print(f"    see {build_dir / result.html_name}", flush=True)
            if not args.keep_going:
                stopped = True     # the remaining notebooks are listed as skipped

    index = write_index(results, build_dir, profile_name)
    print()
    print(format_summary(results, profile_name))
    print(f"Index: {index}")
    if stopped:
        print("Stopped at the first failure; use --keep-going to run the rest anyway.")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
