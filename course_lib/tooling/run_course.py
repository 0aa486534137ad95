"""Run every notebook of the course headless and publish the results as HTML.

Used by ``make course``::

    python -m course_lib.tooling.run_course                    # profile from COURSE_PROFILE or detected
    python -m course_lib.tooling.run_course --profile smoke    # the quick CI sizes
    python -m course_lib.tooling.run_course --only 00 02       # notebooks whose names start so
    python -m course_lib.tooling.run_course --stop-on-failure  # stop at the first failed notebook
    python -m course_lib.tooling.run_course --only 06 --fresh --seeds 2
        # notebook 06 twice, seeds 0 and 1, each from an empty data folder (every model it
        # needs trained anew): the spread of its self-checked numbers, beside their bars

For each notebook in ``notebooks/`` (sorted by name) it starts a fresh
``clip-course`` kernel (:mod:`course_lib.tooling.kernel`) in the notebooks folder, runs every cell, and writes

* ``build/<name>.ipynb`` -- the notebook with its outputs,
* ``build/<name>.html``  -- the same as a web page that needs no internet (maths
  rendered at build time), titled, linked to the index and its neighbours
  (:mod:`course_lib.tooling.pages`),
* ``build/index.html``   -- one line per notebook: status, duration, profile.

The source notebooks are never modified. The kernel gets ``COURSE_PROFILE``
(the chosen profile), ``OMP_WAIT_POLICY=PASSIVE`` and ``COURSE_PROGRESS=text`` (plain-text progress, no
widgets) in its environment, and the repository root on ``PYTHONPATH`` so
that ``import course_lib`` works from the notebooks folder.

The exit status is 0 when every notebook ran, 1 otherwise. A failed notebook
still gets its partial HTML page (the outputs up to the failing cell, with the
error), and the later notebooks still run (each trains what it needs and is
missing), unless ``--stop-on-failure``. The run ends with a table and, for each
failure, what missed and what to do.

Seeds: ``--seed S`` runs with ``COURSE_SEED=S`` (model initialisation and data order;
the world is the same), checkpoints in ``data/checkpoints/<profile>-seed<S>/``;
``--seeds N`` runs seeds 0 .. N-1 one after the other. ``--fresh`` gives each run an
empty data folder ``data/fresh/seed<S>/`` (deleted first; the course's shipped
references and the rendered world, the same for every seed, are linked in), so every
model is trained as on a new machine. Each run's self-checks write their numbers
(:mod:`course_lib.selfcheck`) and the last table gives each one per seed, beside its bar.
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

from course_lib.paths import BUILD_DIR, NOTEBOOK_DIR, REPO_ROOT
from course_lib.profiles import PROFILE_NAMES, UnknownProfileError, get_profile
from course_lib.tooling import kernel

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
    cell_seconds: dict = None  # {cell index: seconds} of every code cell that ran (nbclient's timing)
    speed: float | None = None  # the machine's speed while it ran: the mean of before and after (s/step;
                                # None: smoke, not measured)

    @property
    def sized_seconds(self) -> float | None:
        """``seconds`` scaled to the speed the cpu notebooks are sized for
        (:data:`SIZED_FOR_S_PER_STEP`): the number a 9-minute budget is read against."""
        if not self.speed or self.status == "skipped":
            return None
        return self.seconds * SIZED_FOR_S_PER_STEP / self.speed

    def slowest(self, k: int = 3) -> str:
        """``"cell 14 172 s, cell 26 61 s"``: where the time went."""
        cells = sorted((self.cell_seconds or {}).items(), key=lambda kv: -kv[1])[:k]
        return ", ".join(f"cell {i} {s:.0f} s" for i, s in cells)


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


def kernel_env(profile_name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of each notebook's kernel: ours plus the course's switches (and
    ``extra``, e.g. ``COURSE_SEED``, ``COURSE_DATA_DIR``, ``COURSE_RESULTS_DIR``)."""
    env = dict(os.environ)
    kernel.apply_env(env)                 # OMP_WAIT_POLICY=PASSIVE unless set otherwise
    kernel.make_spec_findable(env)
    env["COURSE_PROFILE"] = profile_name
    env["COURSE_PROGRESS"] = "text"
    old_path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + old_path if old_path else "")
    env.update(extra or {})
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
    """Export an (executed) notebook to one offline HTML page (course_lib.tooling.pages)."""
    from course_lib.tooling.pages import export_html
    export_html(nb, html_path, prev_page=prev_page, next_page=next_page)


def run_notebook(path: Path, build_dir: Path, profile_name: str,
                 timeout: int | None = DEFAULT_TIMEOUT_S, *, prev_page: str | None = None,
                 next_page: str | None = None, env: dict[str, str] | None = None) -> NotebookResult:
    """Execute one notebook in a fresh kernel; write its .ipynb and .html to ``build_dir``.

    Args:
        path: the source notebook (read, never written).
        build_dir: where ``<name>.ipynb`` and ``<name>.html`` go.
        profile_name: the value of ``COURSE_PROFILE`` in the kernel.
        timeout: the longest one cell may run, in seconds; 0 or ``None`` for no limit.
        prev_page, next_page: the pages of the notebooks before and after it (linked
            from the page, with the index).
        env: extra variables of the kernel's environment (:func:`kernel_env`).

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
        kernel_name=kernel.KERNEL_NAME,       # the course kernel (course_lib/tooling/kernel.py)
        resources={"metadata": {"path": str(path.parent)}},   # the kernel's working folder
    )
    status, error = "ok", ""
    start = time.perf_counter()
    try:
        client.execute(env=kernel_env(profile_name, env))
    except Exception as exc:   # a failing cell, a timeout, a dead kernel: all mean "failed"
        status, error = "failed", _short_error(exc)
    seconds = time.perf_counter() - start

    cell_seconds = {}
    for i, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        begin, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if begin and end:
            stamps = [datetime.datetime.fromisoformat(x.replace("Z", "+00:00")) for x in (begin, end)]
            cell_seconds[i] = (stamps[1] - stamps[0]).total_seconds()
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
                          html_name=html_name, cell_seconds=cell_seconds)


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
    sized = any(r.sized_seconds for r in results)
    head = f"{'notebook':<{width}}  {'status':<7}  {'seconds':>8}"
    rule = f"{'-' * width}  {'-' * 7}  {'-' * 8}"
    if sized:     # the budget column: 9 minutes (540 s) at the speed the notebooks are sized for
        head += f"  {'s/step':>6}  {f'at {SIZED_FOR_S_PER_STEP} s/step':>14}"
        rule += f"  {'-' * 6}  {'-' * 14}"
    lines = [head, rule]
    for r in results:
        seconds = f"{r.seconds:8.1f}" if r.status != "skipped" else f"{'':>8}"
        line = f"{r.name:<{width}}  {r.status:<7}  {seconds}"
        if sized and r.sized_seconds:
            line += f"  {r.speed:6.3f}  {r.sized_seconds:14.0f}"
        lines.append(line)
    total = sum(r.seconds for r in results)
    n_ok = sum(r.status == "ok" for r in results)
    lines.append(f"{n_ok} of {len(results)} ok, {total:.1f} s in all, profile {profile_name}")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.tooling.run_course",
        description="Run the course notebooks headless and write HTML pages to the build folder.")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                        help="course profile (default: COURSE_PROFILE, else detected)")
    parser.add_argument("--only", nargs="+", metavar="PREFIX", default=None,
                        help="run only notebooks whose names start with these, e.g. --only 00 01")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"longest time one cell may run; 0 for no limit (default {DEFAULT_TIMEOUT_S})")
    parser.add_argument("--stop-on-failure", action="store_true",
                        help="stop at the first failed notebook (default: run the rest anyway)")
    parser.add_argument("--keep-going", action="store_true",
                        help="run the rest after a failure (the default; kept for old scripts)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=_seed_arg, default=None, metavar="S",
                       help="training seed (COURSE_SEED): model initialisation and data order")
    seeds.add_argument("--seeds", type=_count_arg, default=None, metavar="N",
                       help="run everything once per seed 0 .. N-1 and report each number's spread")
    parser.add_argument("--fresh", action="store_true",
                        help="each run starts from an empty data folder (data/fresh/seed<S>/): "
                             "every model trained anew, as on a new machine")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOK_DIR, metavar="DIR",
                        help="folder of the source notebooks (default: notebooks/)")
    parser.add_argument("--build", type=Path, default=BUILD_DIR, metavar="DIR",
                        help="folder for the executed notebooks and HTML (default: build/)")
    return parser.parse_args(argv)


def _seed_arg(text: str) -> int:
    from course_lib.profiles import check_seed
    try:
        return check_seed(int(text), "--seed")
    except (TypeError, ValueError) as e:
        message = str(e) if "--seed" in str(e) else f"--seed {text!r}: give a whole number, e.g. --seed 1"
        raise argparse.ArgumentTypeError(message) from None


def _count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give how many seeds, e.g. --seeds 2") from None
    if not 1 <= value <= 20:
        raise argparse.ArgumentTypeError(f"--seeds {value}: give between 1 and 20 seeds.")
    return value


def fresh_data_dir(seed: int, root: Path | None = None) -> Path:
    """An empty data folder for one fresh run: ``data/fresh/seed<S>/`` (deleted and made
    anew), with the shipped references and the world's rendered cache linked in (both are
    the same for every seed; the world is generated, never trained)."""
    import shutil

    from course_lib import paths

    root = Path(root) if root is not None else paths.DATA_DIR / "fresh"
    folder = root / f"seed{seed}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, target in (("shipped", paths.SHIPPED_DIR), ("cache", paths.CACHE_DIR)):
        target.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(target.resolve(), target_is_directory=True)
    return folder


@dataclass
class Run:
    """One pass over the notebooks: a seed, its folders and its results."""
    seed: int | None
    build_dir: Path
    data_dir: Path | None
    results: list[NotebookResult]

    @property
    def label(self) -> str:
        return "" if self.seed is None else f"seed {self.seed}"

    def env(self) -> dict[str, str]:
        out = {"COURSE_RESULTS_DIR": str(self.build_dir / "results")}
        if self.seed is not None:
            out["COURSE_SEED"] = str(self.seed)
        if self.data_dir is not None:
            out["COURSE_DATA_DIR"] = str(self.data_dir)
        return out


def _run_once(run: Run, notebooks: list[Path], profile_name: str, args, speed: float | None = None) -> bool:
    """Run every notebook for one seed; True when the run was stopped by --stop-on-failure.
    ``speed``: the machine's speed just measured (else measured here), the first notebook's "before"."""
    import shutil

    run.build_dir.mkdir(parents=True, exist_ok=True)
    results_dir = run.build_dir / "results"
    if results_dir.exists():
        shutil.rmtree(results_dir)            # a notebook that fails early must not show old numbers
    stopped = False
    pages = [p.with_suffix(".html").name for p in notebooks]
    for i, path in enumerate(notebooks, start=1):
        if stopped:
            run.results.append(NotebookResult(name=path.name, status="skipped"))
            continue
        label = f" ({run.label})" if run.label else ""
        # The speed of the day moves within one run (0.52 -> 0.31 s/step within minutes on
        # 2026-12-07): each notebook's time is read against the speeds measured around it
        # (one notebook's "after" is the next one's "before": measured once).
        if speed is None:
            speed = measure_speed(profile_name)
        print(f"[{i}/{len(notebooks)}]{label} {path.name} ... ", end="", flush=True)
        result = run_notebook(path, run.build_dir, profile_name, timeout=args.timeout,
                              prev_page=pages[i - 2] if i > 1 else None,
                              next_page=pages[i] if i < len(pages) else None, env=run.env())
        # the mean of the speeds before and after: the day's speed moves within one notebook too
        after = measure_speed(profile_name)
        result.speed = None if speed is None or after is None else (speed + after) / 2
        run.results.append(result)
        sized = (f"; {result.sized_seconds:.0f} s at {SIZED_FOR_S_PER_STEP} s/step "
                 f"(speed {speed:.3f} before, {after:.3f} after)" if result.sized_seconds else "")
        speed = after
        print(f"{result.status} in {result.seconds:.1f} s{sized}" + (f" (slowest: {result.slowest()})"
                                                                  if result.cell_seconds else ""), flush=True)
        if result.status != "ok":
            print(f"    {result.error}", flush=True)
            if result.html_name:
                print(f"    see {run.build_dir / result.html_name}", flush=True)
            if args.stop_on_failure:
                stopped = True     # the remaining notebooks are listed as skipped
    write_index(run.results, run.build_dir, profile_name + (f", {run.label}" if run.label else ""))
    return stopped


def format_seed_table(runs: list[Run]) -> str:
    """Per notebook and seed: status and seconds; then every self-checked number per seed,
    its spread and its bar (from the notebooks' :mod:`course_lib.selfcheck` files)."""
    from course_lib.selfcheck import read_results

    names = [r.name for r in runs[0].results]
    width = max([len("notebook")] + [len(n) for n in names])
    head = f"{'notebook':<{width}}  " + "  ".join(f"{r.label:>16}" for r in runs)
    lines = [head, "-" * len(head)]
    for i, name in enumerate(names):
        cells = []
        for r in runs:
            res = r.results[i]
            cells.append(f"{res.status + (f' {res.seconds:.0f} s' if res.status != 'skipped' else ''):>16}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    checks = [read_results(r.build_dir / "results") for r in runs]
    notebooks = sorted(set().union(*[c.keys() for c in checks]))
    if notebooks:
        lines += ["", "Self-checked numbers per seed (min / max over the seeds, and the bar):"]
    for nb in notebooks:
        lines.append(f"  {nb}")
        order = []
        for c in checks:
            for item in c.get(nb, {}).get("checks", []):
                if item["name"] not in order:
                    order.append(item["name"])
        for check_name in order:
            values, bar, direction = [], None, ">="
            for c in checks:
                item = next((x for x in c.get(nb, {}).get("checks", []) if x["name"] == check_name), None)
                values.append(None if item is None else item["value"])
                if item is not None:
                    bar, direction = item["bar"], item["direction"]
            got = [v for v in values if v is not None]
            shown = ", ".join("-" if v is None else _num(v) for v in values)
            spread = f"min {_num(min(got))} max {_num(max(got))}" if got else "no run"
            bar_text = "no bar" if bar is None else f"bar {direction} {_num(bar)}"
            worst = (min(got) if direction == ">=" else max(got)) if got else None
            flag = ""
            if bar is not None and worst is not None:
                flag = "  MISSED" if (worst < bar if direction == ">=" else worst > bar) else ""
            lines.append(f"    {check_name:<32} {shown:<28} {spread:<24} {bar_text}{flag}")
    return "\n".join(lines)


def write_seed_record(runs: list[Run], path: Path, profile_name: str, speed: dict, argv, fresh: bool) -> Path:
    """Every run's notebook times and self-checked numbers in one JSON file, with the command,
    the date and the machine's speed: the record a closing note (and the comparison notebook's
    training-stability column) quotes."""
    import json
    import platform

    from course_lib.selfcheck import read_results

    data = {"command": "python -m course_lib.tooling.run_course " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": datetime.datetime.now().isoformat(timespec="minutes"), "profile": profile_name,
            "fresh": fresh, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "machine_speed_s_per_step": speed,
            "runs": [{"seed": r.seed, "notebooks": [{"name": n.name, "status": n.status,
                                                     "seconds": round(n.seconds, 1), "error": n.error,
                                                     "speed_s_per_step": n.speed,
                                                     "seconds_at_sized_speed": (
                                                         None if n.sized_seconds is None
                                                         else round(n.sized_seconds)),
                                                     "cell_seconds": {str(k): round(v, 1) for k, v in
                                                                      (n.cell_seconds or {}).items()}}
                                                    for n in r.results],
                      "checks": read_results(r.build_dir / "results")} for r in runs]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def _num(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 10 else f"{v:,.0f}"


def what_to_do(runs: list[Run]) -> list[str]:
    """For each failed notebook: what failed (its one-line error) and what to do."""
    lines = []
    for run in runs:
        for res in run.results:
            if res.status != "failed":
                continue
            where = f" ({run.label})" if run.label else ""
            lines.append(f"- {res.name}{where} failed: {res.error}")
            if res.html_name:
                lines.append(f"  Its page, up to the failing cell: {run.build_dir / res.html_name}")
            if res.error.startswith(("SelfCheckFailed", "AssertionError")):
                lines.append("  A measured number missed its bar. Open the notebook and run it again: a "
                             "training run stopped by its time budget continues where it stopped; where a "
                             "notebook shows a course reference beside your model, it shows what longer "
                             "training gives.")
            else:
                lines.append("  Open the notebook in JupyterLab (`make lab`) and run it from the top: the "
                             "failing cell's message says what went wrong and how to fix it.")
    return lines


#: The machine speed (:func:`course_lib.diffusion.machine_speed`) the cpu notebooks are sized for:
#: 9 minutes each at this many seconds per reference step, a slow day's speed on 2 cores.
SIZED_FOR_S_PER_STEP = 0.5


def measure_speed(profile_name: str) -> float | None:
    """The machine's speed (:func:`course_lib.diffusion.machine_speed`), or None in the smoke
    profile (CI: its times are budgets, not measurements to report)."""
    if profile_name == "smoke":
        return None
    from course_lib.diffusion import machine_speed
    return machine_speed()


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks as the command line asks; return the exit status (0 = all ok)."""
    args = _parse_args(argv)
    try:
        profile_name = get_profile(args.profile).name
    except (UnknownProfileError, ValueError) as exc:      # e.g. COURSE_PROFILE=fast, COURSE_SEED=x
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

    if args.seeds is not None:
        seeds: list[int | None] = list(range(args.seeds))
    elif args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = [None]                       # COURSE_SEED from the environment, if any
    runs = []
    for seed in seeds:
        sub = build_dir if len(seeds) == 1 else build_dir / f"seed{seed}"
        data_dir = None
        if args.fresh:
            from course_lib.profiles import seed_from_env
            data_dir = fresh_data_dir(seed if seed is not None else (seed_from_env() or 0))
        runs.append(Run(seed, sub, data_dir, []))

    print(f"Running {len(notebooks)} notebook(s) from {notebook_dir} with profile "
          f"{profile_name!r}" + (f", seeds {', '.join(map(str, seeds))}" if seeds != [None] else "")
          + (", each from an empty data folder" if args.fresh else "") + f"; results in {build_dir}",
          flush=True)
    speed = {"before": measure_speed(profile_name)}
    if speed["before"] is not None:
        print(f"Machine speed: {speed['before']:.3f} s per training step of the cpu diffusion UNet at "
              f"batch 64 (the cpu notebooks are sized for 9 min each at {SIZED_FOR_S_PER_STEP} s/step)",
              flush=True)
    stopped = False
    for run in runs:
        if run.data_dir is not None:
            print(f"Data folder of this run: {run.data_dir}", flush=True)
        stopped = _run_once(run, notebooks, profile_name, args,
                            speed=speed["before"] if run is runs[0] else None) or stopped

    print()
    for run in runs:
        if run.label:
            print(run.label + ":")
        print(format_summary(run.results, profile_name))
        print(f"Index: {run.build_dir / 'index.html'}")
    if len(runs) > 1 or any((r.build_dir / "results").exists() for r in runs if r.seed is not None):
        print()
        print(format_seed_table(runs))
    speed["after"] = measure_speed(profile_name) if speed["before"] is not None else None
    if speed["after"] is not None:
        print(f"Machine speed: {speed['before']:.3f} s/step before the run, {speed['after']:.3f} after "
              f"(sized for {SIZED_FOR_S_PER_STEP}; give notebook times with these)")
    if seeds != [None] or args.fresh:
        record = write_seed_record(runs, build_dir / "seeds.json", profile_name, speed, argv, args.fresh)
        print(f"Per-seed numbers and times: {record}")
    failed = what_to_do(runs)
    if failed:
        print()
        print("What failed, and what to do:")
        print("\n".join(failed))
    if stopped:
        print("Stopped at the first failure (--stop-on-failure); leave it out to run the rest anyway.")
    return 0 if all(r.status == "ok" for run in runs for r in run.results) else 1


if __name__ == "__main__":
    sys.exit(main())
