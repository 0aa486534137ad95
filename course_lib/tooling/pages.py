"""The HTML pages ``make course`` writes: readable offline, titled, linked.

:func:`export_html` turns an executed notebook into one page with nbconvert's
JupyterLab look, through the course's template (``course_lib/tooling/templates/course``):

* **nothing is fetched from the internet**: nbconvert's pages load MathJax and
  require.js from a CDN, so offline every equation showed as raw LaTeX. The course
  renders each ``$...$`` and ``$$...$$`` of the markdown cells at build time
  (:func:`render_math`, matplotlib's mathtext, as inline SVG) and leaves the CDN
  scripts out;
* text progress bars (``COURSE_PROGRESS=text`` writes tqdm to stderr) are folded to
  their last state, and stderr (warnings, logs, progress) is shown in neutral grey;
  only real errors keep the pink of an error;
* the page's title is the notebook's first heading, and links lead to the index and
  to the previous and next notebooks.
"""
from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

__all__ = ["TEMPLATE_DIR", "render_math", "tex_to_svg", "tidy_progress", "page_title", "export_html"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

# $$...$$ (display) or $...$ (inline, on one line), not inside code spans or fenced code
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)", re.S)
_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)


def _normalise(tex: str) -> str:
    """LaTeX -> what matplotlib's mathtext reads (it lacks \\big, \\tfrac, \\lVert, ...)."""
    tex = " ".join(tex.split())
    tex = re.sub(r"\\(?:big|Big|bigg|Bigg)[lr]?(?![a-zA-Z])", "", tex)
    tex = re.sub(r"\\(mathcal|mathbb|mathbf|mathrm|mathit)\s*([A-Za-z0-9])", r"\\\1{\2}", tex)
    tex = re.sub(r"\\tfrac\s*(\d)(\d)", r"\\frac{\1}{\2}", tex).replace("\\tfrac", "\\frac")
    tex = tex.replace("\\lVert", "\\Vert").replace("\\rVert", "\\Vert").replace("\\!", "")
    return re.sub(r"\\le(?![a-zA-Z])", r"\\leq", re.sub(r"\\ge(?![a-zA-Z])", r"\\geq", tex))


def tex_to_svg(tex: str, size: float = 13.0) -> tuple[bytes, float]:
    """One formula as SVG bytes and its depth below the baseline (points)."""
    import matplotlib
    from matplotlib.font_manager import FontProperties
    from matplotlib.mathtext import math_to_image

    buf = io.BytesIO()
    with matplotlib.rc_context({"mathtext.fontset": "cm", "svg.fonttype": "path"}):
        depth = math_to_image(f"${_normalise(tex)}$", buf, prop=FontProperties(size=size),
                              format="svg")
    return buf.getvalue(), float(depth or 0.0)


def _math_html(tex: str, display: bool) -> str:
    try:
        svg, depth = tex_to_svg(tex, 15.0 if display else 13.0)
    except Exception:          # mathtext cannot read it: show the LaTeX as code, never fetch
        return f"<code>{html.escape(tex)}</code>"
    src = "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")
    alt = html.escape(" ".join(tex.split()), quote=True)
    if display:
        # a span (shown as a block), not a div: a div would start a raw HTML block and swallow
        # the rest of the paragraph into it
        return (f'<span class="course-math-display"><img class="course-math" alt="{alt}" '
                f'src="{src}"></span>')
    return (f'<img class="course-math" alt="{alt}" src="{src}" '
            f'style="vertical-align: -{depth:.1f}pt">')


def render_math(markdown: str) -> str:
    """Replace the maths of a markdown text by inline SVG images (code spans untouched)."""
    parts = _CODE.split(markdown)
    for i in range(0, len(parts), 2):            # even parts are outside code
        parts[i] = _MATH.sub(lambda m: _math_html(m.group(1) or m.group(2), m.group(1) is not None),
                             parts[i])
    return "".join(parts)


_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\|\s*\d+/\d+ \[|it/s\]|s/it\]")


def tidy_progress(text: str) -> str:
    """A stderr text with tqdm's updates folded: each bar keeps only its last state."""
    out: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        states = [s for s in line.split("\r") if s.strip()]
        if not states:
            out.append("")
            continue
        last = states[-1]
        label = last.split(":", 1)[0] if _BAR.search(last) else None
        if label is not None and out and _BAR.search(out[-1]) and out[-1].split(":", 1)[0] == label:
            out[-1] = last                           # the same bar again: keep the newest
        else:
            out.append(last)
    return "\n".join(out)


def _merge_streams(outputs: list) -> list:
    """Consecutive outputs of the same stream as one (the kernel sends each bar update
    as its own message: unmerged, each became its own box)."""
    merged: list = []
    for output in outputs:
        if (output.get("output_type") == "stream" and merged
                and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == output.get("name")):
            merged[-1]["text"] += output["text"]
        else:
            merged.append(output)
    return merged


def page_title(nb, fallback: str) -> str:
    """The notebook's first markdown heading (without '#'), else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return fallback


def _nav(prev_page: str | None, next_page: str | None, where: str) -> str:
    def link(page, text):
        return f'<a href="{html.escape(page)}">{text}</a>' if page else "<span></span>"
    return (f'<nav class="course-nav {where}">{link(prev_page, "&larr; " + html.escape(prev_page or ""))}'
            f'<a href="index.html">all notebooks</a>'
            f'{link(next_page, html.escape(next_page or "") + " &rarr;")}</nav>')


def export_html(nb, html_path: str | Path, *, prev_page: str | None = None,
                next_page: str | None = None) -> Path:
    """Write an executed notebook as one offline page (see the module docstring)."""
    import copy

    from nbconvert import HTMLExporter

    html_path = Path(html_path)
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = render_math(cell.source)
        if "outputs" in cell:
            cell.outputs = _merge_streams(cell.outputs)
            for output in cell.outputs:
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    output["text"] = tidy_progress(output["text"])
            cell.outputs = [o for o in cell.outputs                 # no empty boxes
                            if o.get("output_type") != "stream" or o["text"].strip()]
    exporter = HTMLExporter(template_name="course", extra_template_basedirs=[str(TEMPLATE_DIR)])
    resources = {"metadata": {"name": page_title(nb, html_path.stem)},
                 "course_nav_top": _nav(prev_page, next_page, "top"),
                 "course_nav_bottom": _nav(prev_page, next_page, "bottom")}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    html_path.write_text(body, encoding="utf-8")
    return html_path
