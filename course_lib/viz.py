"""Pictures for the notebooks: image grids, comparisons, loss curves, similarity maps.

Every function here draws with matplotlib only and returns a
:class:`matplotlib.figure.Figure`. In a notebook, put the call last in a cell and
the figure appears once; in a script, save it with ``fig.savefig("grid.png")``.

Images may be given in the two forms the course uses:

* a float tensor ``(N, C, H, W)`` with values in ``[-1, 1]`` -- what the models
  take and produce (``C`` is 3 for colour, 1 for grey);
* ``uint8`` pixels ``(N, H, W, 3)`` as a NumPy array or a tensor -- what the
  renderer of the generated world produces;

or a list of single images of either form (``(C, H, W)`` floats, ``(H, W, 3)``
uint8, PIL images). Tiny 32x32 images are enlarged without blurring
(``interpolation="nearest"``) so that every pixel stays visible.

Figures are made with ``plt.subplots`` and closed right away (``plt.close``):
the notebook then shows the returned figure once, never twice, and a script or
a test never opens a window.

:class:`LivePlot` redraws a loss plot while a model trains; outside a Jupyter
kernel (plain python, pytest, CI logs) it does nothing.
"""
from __future__ import annotations

import math
import textwrap
import time

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["to_numpy_images", "image_grid", "compare", "loss_curves", "smooth_curve",
           "bar", "heatmap", "scatter_embeddings", "LivePlot", "in_notebook"]

#: Images this small (or smaller) are enlarged with nearest-neighbour interpolation.
SMALL_IMAGE_SIZE = 64
#: Characters per line of a caption under an image.
CAPTION_WIDTH = 18
#: Largest matrix (rows x columns) whose values :func:`heatmap` writes in the cells.
ANNOTATE_MAX_CELLS = 144


# --------------------------------------------------------------------------- images

def _one_image_to_numpy(image) -> np.ndarray:
    """One image -> an ``(H, W, 3)`` or ``(H, W)`` array, floats in [0, 1] or uint8."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype == torch.bfloat16 or image.dtype == torch.float16:
            image = image.float()
        image = image.numpy()
    image = np.asarray(image)          # also turns a PIL image into uint8 pixels
    if image.ndim != 3 and image.ndim != 2:
        raise ValueError(f"expected one image with 2 or 3 dimensions, got shape {image.shape}")

    if image.dtype == np.uint8:
        # uint8 pixels are channels-last: (H, W, 3), (H, W, 1) or (H, W).
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        return image

    # Floats are channels-first (C, H, W) with values in [-1, 1].
    image = image.astype(np.float32)
    if image.ndim == 3:
        if image.shape[0] not in (1, 3):
            raise ValueError(
                f"a float image must be (C, H, W) with C = 1 or 3, got shape {image.shape}; "
                "uint8 images are (H, W, 3)")
        image = np.transpose(image, (1, 2, 0))   # (C, H, W) -> (H, W, C)
        if image.shape[-1] == 1:
            image = image[..., 0]
    return np.clip((image + 1.0) / 2.0, 0.0, 1.0)


def to_numpy_images(images) -> list[np.ndarray]:
    """Turn images in any of the course's forms into a list of displayable arrays.

    Args:
        images: a float tensor/array ``(N, C, H, W)`` in ``[-1, 1]``; uint8
            ``(N, H, W, 3)`` (NumPy or tensor); or a list of single images
            (``(C, H, W)`` floats, ``(H, W, 3)`` uint8, PIL images).

    Returns:
        One array per image: ``(H, W, 3)`` colour or ``(H, W)`` grey, either
        uint8 or floats in ``[0, 1]`` (both are what ``imshow`` expects).
    """
    if isinstance(images, (list, tuple)):
        return [_one_image_to_numpy(image) for image in images]
    if isinstance(images, torch.Tensor) or isinstance(images, np.ndarray):
        if images.ndim == 4:
            return [_one_image_to_numpy(image) for image in images]
        if images.ndim == 3 or images.ndim == 2:     # a single image
            return [_one_image_to_numpy(images)]
        raise ValueError(f"expected a batch of images (4 dimensions), got shape {tuple(images.shape)}")
    return [_one_image_to_numpy(images)]             # e.g. one PIL image


def _show_image(ax, image: np.ndarray) -> None:
    """Draw one image (from :func:`to_numpy_images`) in ``ax``, without ticks."""
    small = max(image.shape[0], image.shape[1]) <= SMALL_IMAGE_SIZE
    interpolation = "nearest" if small else None     # None: matplotlib's default
    if image.ndim == 2:
        vmax = 255 if image.dtype == np.uint8 else 1.0
        ax.imshow(image, cmap="gray", vmin=0, vmax=vmax, interpolation=interpolation)
    else:
        ax.imshow(image, interpolation=interpolation)
    _hide_ticks(ax)


def _hide_ticks(ax) -> None:
    """No ticks and no frame, but keep the axis labels (used for captions)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _wrap(caption) -> str:
    """A caption wrapped to short lines, to fit under a small image."""
    return textwrap.fill(str(caption), width=CAPTION_WIDTH)


def _caption_lines(captions) -> int:
    """The number of lines of the longest wrapped caption (0 without captions)."""
    if not captions:
        return 0
    return max(_wrap(c).count("\n") + 1 for c in captions)


def _mosaic(images: list[np.ndarray], ncols: int, pad: int = 2) -> np.ndarray:
    """Paste same-sized images into one big float image, ``ncols`` per row."""
    as_float = []
    for image in images:
        image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        as_float.append(image)
    h = max(image.shape[0] for image in as_float)
    w = max(image.shape[1] for image in as_float)
    nrows = math.ceil(len(as_float) / ncols)
    canvas = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad, 3), dtype=np.float32)
    for i, image in enumerate(as_float):
        row, col = divmod(i, ncols)
        top, left = row * (h + pad), col * (w + pad)
        canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    return canvas


def image_grid(images, captions=None, ncols: int = 8, title: str | None = None,
               figsize: tuple[float, float] | None = None, ax=None) -> Figure:
    """Show images in a grid, with an optional caption under each.

    Args:
        images: a float tensor ``(N, C, H, W)`` in ``[-1, 1]``, uint8 ``(N, H, W, 3)``
            (NumPy or tensor), or a list of single images (see :func:`to_numpy_images`).
        captions: one string per image (e.g. its prompt), wrapped in small type
            under the image; ``None`` for no captions.
        ncols: images per row (fewer if there are fewer images).
        title: a title over the whole grid.
        figsize: ``(width, height)`` in inches; by default about 1.4 inch per image.
        ax: draw into this existing axes instead of a new figure. The images are
            then pasted into one picture (one ``imshow``); captions go under each.

    Returns:
        The figure: one axes per image (plus hidden ones filling the last row),
        or ``ax.figure`` when ``ax`` was given.
    """
    pictures = to_numpy_images(images)
    if len(pictures) == 0:
        raise ValueError("image_grid needs at least one image")
    if captions is not None and len(captions) != len(pictures):
        raise ValueError(f"{len(captions)} captions for {len(pictures)} images")
    ncols = max(1, min(ncols, len(pictures)))
    nrows = math.ceil(len(pictures) / ncols)

    if ax is not None:
        return _image_grid_in_ax(ax, pictures, captions, ncols, title)

    lines = _caption_lines(captions)
    if figsize is None:
        figsize = (1.4 * ncols, (1.4 + 0.14 * lines) * nrows + (0.4 if title else 0.0))
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained")
    plt.close(fig)     # the caller shows the returned figure; pyplot must not show it again
    for i, cell in enumerate(axes.flat):
        if i >= len(pictures):
            cell.axis("off")         # an empty cell at the end of the last row
            continue
        _show_image(cell, pictures[i])
        if captions is not None:
            cell.set_xlabel(_wrap(captions[i]), fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def _image_grid_in_ax(ax, pictures, captions, ncols, title) -> Figure:
    """:func:`image_grid` drawn into one existing axes, as a single pasted picture."""
    pad = 2
    canvas = _mosaic(pictures, ncols, pad=pad)
    ax.imshow(canvas, interpolation="nearest")
    _hide_ticks(ax)
    if captions is not None:
        h = max(p.shape[0] for p in pictures)
        w = max(p.shape[1] for p in pictures)
        for i, caption in enumerate(captions):
            row, col = divmod(i, ncols)
            ax.text(col * (w + pad) + w / 2, row * (h + pad) + h, _wrap(caption),
                    ha="center", va="top", fontsize=6)
    if title:
        ax.set_title(title)
    return ax.figure


def compare(rows: dict, captions=None, ncols: int | None = None,
            title: str | None = None, figsize: tuple[float, float] | None = None) -> Figure:
    """Compare images side by side: one row per source, its label on the left.

    Args:
        rows: ``{"real": images, "GAN": images, "VAE": images}``; each value in any
            form :func:`image_grid` takes. Rows may hold different numbers of images.
        captions: one string per column (e.g. the prompt every row was made from),
            written over the top row; ``None`` for none.
        ncols: columns to show; by default the length of the longest row.
            Longer rows are cut to ``ncols``.
        title: a title over the whole figure.
        figsize: ``(width, height)`` in inches; by default about 1.4 inch per image.

    Returns:
        The figure, with ``len(rows) * ncols`` axes (cells past the end of a short
        row are left blank).
    """
    if not rows:
        raise ValueError("compare needs at least one row, e.g. {'real': images}")
    pictures = {label: to_numpy_images(images) for label, images in rows.items()}
    if ncols is None:
        ncols = max(len(p) for p in pictures.values())
    ncols = max(1, ncols)
    nrows = len(pictures)
    lines = _caption_lines(captions[:ncols]) if captions is not None else 0
    if figsize is None:
        figsize = (1.2 + 1.4 * ncols, 1.4 * nrows + 0.14 * lines + (0.4 if title else 0.0))
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained")
    plt.close(fig)
    for r, (label, row_images) in enumerate(pictures.items()):
        for c in range(ncols):
            cell = axes[r, c]
            if c < len(row_images):
                _show_image(cell, row_images[c])
            else:
                _hide_ticks(cell)                  # a blank cell: this row is shorter
            if c == 0:
                cell.set_ylabel(str(label), rotation=0, ha="right", va="center", fontsize=10)
            if r == 0 and captions is not None and c < len(captions):
                cell.set_title(_wrap(captions[c]), fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- curves

def smooth_curve(values, smooth: float = 0.9) -> np.ndarray:
    """Exponential moving average, as TensorBoard draws it.

    Each point is ``smooth * previous + (1 - smooth) * value``, corrected at the
    start so that the curve does not begin at 0. ``smooth=0`` returns the values.
    """
    values = np.asarray(values, dtype=np.float64)
    if smooth <= 0 or len(values) == 0:
        return values
    out = np.empty_like(values)
    average, weight = 0.0, 0.0
    for i, value in enumerate(values):
        average = smooth * average + (1 - smooth) * value
        weight = smooth * weight + (1 - smooth)
        out[i] = average / weight
    return out


def _steps_and_values(series) -> tuple[np.ndarray, np.ndarray]:
    """``[v0, v1, ...]`` or ``[(step, v), ...]`` -> (steps, values) arrays."""
    series = list(series)
    if len(series) == 0:
        return np.zeros(0), np.zeros(0)
    if isinstance(series[0], (tuple, list)):
        steps = np.array([float(s) for s, _ in series])
        values = np.array([float(v) for _, v in series])
    else:
        steps = np.arange(len(series), dtype=np.float64)
        values = np.array([float(v) for v in series])
    return steps, values


def loss_curves(history: dict, smooth: float = 0.9, ax=None, logy: bool = False,
                title: str | None = None, figsize: tuple[float, float] = (7, 3.5)) -> Figure:
    """Plot training losses: one line per name, raw (faint) and smoothed.

    Args:
        history: ``{"loss": [0.9, 0.8, ...]}`` (x = position) or
            ``{"loss": [(step, value), ...]}`` (x = step); several names give
            several lines, e.g. ``{"generator": [...], "discriminator": [...]}``.
        smooth: exponential smoothing in ``[0, 1)``; 0 draws only the raw values.
        ax: draw into this axes instead of a new figure.
        logy: a logarithmic y axis (useful when a loss falls by orders of magnitude).
        title: the axes title.
        figsize: size of a new figure in inches.

    Returns:
        The figure (``ax.figure`` when ``ax`` was given).
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        plt.close(fig)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, series) in enumerate(history.items()):
        steps, values = _steps_and_values(series)
        if len(values) == 0:
            continue
        color = colors[i % len(colors)]
        if smooth > 0 and len(values) > 1:
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=1)
            ax.plot(steps, smooth_curve(values, smooth), color=color, linewidth=2, label=name)
        else:
            ax.plot(steps, values, color=color, linewidth=1.5, label=name,
                    marker="o" if len(values) == 1 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return ax.figure


# --------------------------------------------------------------------------- numbers

def bar(values: dict, title: str | None = None, ylabel: str | None = None, ax=None,
        reference: float | None = None, reference_label: str = "chance",
        fmt: str = "{:.2f}", figsize: tuple[float, float] | None = None) -> Figure:
    """A bar chart of named numbers, each bar labelled with its value.

    Args:
        values: ``{"GAN": 0.41, "VAE": 0.35, "diffusion": 0.78}``.
        title: the axes title.
        ylabel: what the numbers are, e.g. ``"alignment (judge accuracy)"``.
        ax: draw into this axes instead of a new figure.
        reference: draw a dashed horizontal line here, e.g. chance level.
        reference_label: the legend text of that line.
        fmt: how to write each value over its bar.
        figsize: size of a new figure in inches.

    Returns:
        The figure (``ax.figure`` when ``ax`` was given).
    """
    if ax is None:
        if figsize is None:
            # wide enough for the bars and for the title (a long title was cut at both ends)
            figsize = (max(3.0, 0.9 * len(values) + 1.5, 0.1 * len(title or "") + 0.8), 3.2)
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        plt.close(fig)
    names = [str(name) for name in values]
    numbers = [float(v) for v in values.values()]
    bars = ax.bar(range(len(names)), numbers, color="tab:blue")
    ax.bar_label(bars, labels=[fmt.format(v) for v in numbers], fontsize=8, padding=2)
    if reference is not None:
        # named at the line's right end, outside the bars: a legend box could hide a value
        ax.axhline(reference, color="gray", linestyle="--", linewidth=1, label=reference_label)
        ax.annotate(reference_label, xy=(1.0, reference), xycoords=("axes fraction", "data"),
                    xytext=(3, 0), textcoords="offset points", va="center", ha="left",
                    fontsize=8, color="gray")
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.margins(y=0.15)
    _fit_tick_labels(ax, names)
    return ax.figure


def _fit_tick_labels(ax, names: list[str]) -> None:
    """Category names under bars that never overlap: as they are if they fit, else wrapped
    onto two or three lines, else turned 30 degrees (measured on the drawn figure)."""
    import textwrap

    ax.set_xticks(range(len(names)))
    fig = ax.figure

    def overlapping() -> bool:
        fig.draw_without_rendering()
        renderer = fig._get_renderer()          # works for figures pyplot has let go of
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        return any(a.x1 + 8 > b.x0 for a, b in zip(boxes, boxes[1:]))     # 8 px: a visible gap

    ax.set_xticklabels(names)
    if len(names) < 2 or not overlapping():
        return
    for width in (14, 10):
        ax.set_xticklabels([textwrap.fill(n, width, break_long_words=False) for n in names])
        if not overlapping():
            return
    ax.set_xticklabels(names, rotation=30, ha="right", rotation_mode="anchor")


def heatmap(matrix, row_labels=None, col_labels=None, title: str | None = None, ax=None,
            cmap: str = "viridis", annotate: bool | None = None, fmt: str = "{:.2f}",
            vmin: float | None = None, vmax: float | None = None, colorbar: bool = True,
            xlabel: str | None = None, ylabel: str | None = None,
            figsize: tuple[float, float] | None = None) -> Figure:
    """A matrix as coloured cells: CLIP similarities (images x captions), confusion matrices.

    Args:
        matrix: a 2-D array or tensor, ``(rows, cols)``.
        row_labels: one label per row (e.g. image names); ``None`` for indices.
        col_labels: one label per column (e.g. captions); ``None`` for indices.
        title: the axes title.
        ax: draw into this axes instead of a new figure.
        cmap: matplotlib colour map.
        annotate: write each value in its cell; by default only for small
            matrices (at most ``ANNOTATE_MAX_CELLS`` cells).
        fmt: how to write the values, e.g. ``"{:.0f}"`` for counts.
        vmin, vmax: the value range of the colours (default: the matrix's range).
        colorbar: add a colour bar.
        xlabel, ylabel: axis titles, e.g. ``"caption"`` and ``"image"``.
        figsize: size of a new figure in inches.

    Returns:
        The figure (``ax.figure`` when ``ax`` was given).
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().float().cpu().numpy()
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D matrix, got shape {matrix.shape}")
    n_rows, n_cols = matrix.shape
    if ax is None:
        if figsize is None:
            figsize = (min(12.0, 2.5 + 0.55 * n_cols), min(12.0, 1.5 + 0.45 * n_rows))
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        plt.close(fig)
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.8)

    if row_labels is not None:
        ax.set_yticks(range(n_rows), labels=[str(label) for label in row_labels], fontsize=8)
    if col_labels is not None:
        ax.set_xticks(range(n_cols), labels=[str(label) for label in col_labels], fontsize=8,
                      rotation=45, ha="right", rotation_mode="anchor")

    if annotate is None:
        annotate = n_rows * n_cols <= ANNOTATE_MAX_CELLS
    if annotate:
        low, high = image.get_clim()
        middle = (low + high) / 2
        for r in range(n_rows):
            for c in range(n_cols):
                value = matrix[r, c]
                # Light text on dark cells, dark text on light cells (viridis: low = dark).
                color = "white" if value < middle else "black"
                ax.text(c, r, fmt.format(value), ha="center", va="center", fontsize=7, color=color)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax.figure


def scatter_embeddings(points, labels=None, title: str | None = None, ax=None,
                       size: float = 12, legend: bool = True,
                       figsize: tuple[float, float] = (5.5, 4.5)) -> Figure:
    """A 2-D map of embeddings, each point coloured by an attribute (e.g. its colour word).

    Args:
        points: ``(N, 2)`` array or tensor, e.g. embeddings projected with PCA.
        labels: ``N`` labels (strings or numbers, treated as categories); points
            with the same label share a colour, and a label that names a colour
            (``"red"``) is drawn in it. ``None`` draws all in one colour.
        title: the axes title.
        ax: draw into this axes instead of a new figure.
        size: marker size.
        legend: show which colour is which label (at most 20 labels).
        figsize: size of a new figure in inches.

    Returns:
        The figure (``ax.figure`` when ``ax`` was given).
    """
    if isinstance(points, torch.Tensor):
        points = points.detach().float().cpu().numpy()
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"scatter_embeddings needs (N, 2) points, got shape {points.shape}; "
                         "project higher-dimensional embeddings to 2-D first (e.g. PCA)")
    if labels is not None and len(labels) != len(points):
        raise ValueError(f"{len(labels)} labels for {len(points)} points")
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        plt.close(fig)

    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.8)
    else:
        labels = [str(label) for label in labels]
        categories = sorted(set(labels))
        cmap = plt.get_cmap("tab10" if len(categories) <= 10 else "tab20")
        for i, category in enumerate(categories):
            mask = np.array([label == category for label in labels])
            # A label that names a colour ("red", "blue") is drawn in that colour.
            if category.isalpha() and matplotlib.colors.is_color_like(category):
                color = category
            else:
                color = cmap(i % cmap.N)
            ax.scatter(points[mask, 0], points[mask, 1], s=size, alpha=0.8, color=color,
                       edgecolors="0.3", linewidths=0.3, label=category)
        if legend and len(categories) <= 20:
            ax.legend(fontsize=7, markerscale=1.5, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax.figure


# --------------------------------------------------------------------------- live plot

def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, classic notebook, VS Code, Colab, nbclient).

    A Jupyter kernel runs an ``ipykernel`` ``ZMQInteractiveShell``; plain
    python, the IPython terminal and pytest do not.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    try:
        from ipykernel.zmqshell import ZMQInteractiveShell
    except ImportError:
        return False
    return isinstance(shell, ZMQInteractiveShell)


class LivePlot:
    """A loss plot that redraws itself in a notebook while a model trains.

    Usage::

        live = LivePlot(every_s=profile.plot_every_s)
        for step in range(steps):
            ...
            history["loss"].append((step, loss.item()))
            live.update(history)        # redraws at most every `every_s` seconds
        live.close(history)             # the final curves, drawn once

    Inside a Jupyter kernel the plot is one output that is replaced in place
    (``display(fig, display_id=True)`` and then ``handle.update(fig)``).
    Anywhere else (plain python, pytest, CI) both methods do nothing.

    Args:
        every_s: the least number of seconds between two redraws (drawing
            takes time away from training).
        title, smooth, logy: passed to :func:`loss_curves`.
    """

    def __init__(self, every_s: float = 5.0, title: str | None = None, smooth: float = 0.9,
                 logy: bool = False):
        self.every_s = float(every_s)
        self.title = title
        self.smooth = smooth
        self.logy = logy
        #: False outside a Jupyter kernel: then nothing is ever drawn.
        self.enabled = in_notebook()
        self._handle = None            # the notebook output we keep replacing
        self._last_draw = None         # time.monotonic() of the last redraw

    def update(self, history: dict) -> None:
        """Redraw ``history`` (as :func:`loss_curves` takes it) if ``every_s`` has passed."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self._last_draw is not None and now - self._last_draw < self.every_s:
            return
        self._draw(history)
        self._last_draw = now

    def close(self, history: dict) -> None:
        """Draw the final state of ``history`` once, whenever the last redraw was."""
        if not self.enabled:
            return
        self._draw(history)
        self._last_draw = time.monotonic()

    def _draw(self, history: dict) -> None:
        from IPython.display import display
        fig = loss_curves(history, smooth=self.smooth, logy=self.logy, title=self.title)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)     # loss_curves closed it already; closing twice is harmless
