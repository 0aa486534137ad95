"""How the course runs, apart from what it teaches: nothing here is imported by a notebook.

* :mod:`~course_lib.tooling.run_course` -- ``make course``: every notebook headless, one
  offline HTML page each, a table of times and self-checks (``--fresh``, ``--seeds N``).
* :mod:`~course_lib.tooling.pages` -- the offline pages (maths rendered at build time).
* :mod:`~course_lib.tooling.kernel` -- the ``clip-course`` Jupyter kernel and its environment
  (``OMP_WAIT_POLICY=PASSIVE``).
* :mod:`~course_lib.tooling.pytest_plugin` -- nbval in the course kernel, with each
  notebook's time.
"""
