"""Tests of course_lib.viz: every picture function returns a figure with what it should hold."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")   # off-screen drawing; must come before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from course_lib import viz


def float_images(n: int, size: int = 32, channels: int = 3) -> torch.Tensor:
    """Model-style images: (N, C, H, W) floats in [-1, 1]."""
    return torch.rand(n, channels, size, size) * 2 - 1


def uint8_images(n: int, size: int = 32) -> np.ndarray:
    """Renderer-style images: (N, H, W, 3) uint8."""
    return np.random.default_rng(0).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def n_images(fig: Figure) -> int:
    """How many images were drawn in all the figure's axes."""
    return sum(len(ax.images) for ax in fig.axes)


def draw(fig: Figure) -> None:
    """Render the figure (catches layout and drawing errors that building it does not)."""
    fig.canvas.draw()


# ----------------------------------------------------------------- image conversion

def test_to_numpy_images_maps_minus_one_one_to_zero_one():
    images = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    (out,) = viz.to_numpy_images(images)
    assert out.shape == (2, 2, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[0, 0], [0.0, 0.5, 1.0])


def test_to_numpy_images_accepts_every_form():
    assert len(viz.to_numpy_images(float_images(3))) == 3
    assert len(viz.to_numpy_images(uint8_images(4))) == 4
    assert len(viz.to_numpy_images(torch.from_numpy(uint8_images(2)))) == 2
    assert len(viz.to_numpy_images([float_images(1)[0], uint8_images(1)[0]])) == 2
    grey = viz.to_numpy_images(float_images(2, channels=1))
    assert grey[0].shape == (32, 32)
    with pytest.raises(ValueError):
        viz.to_numpy_images(torch.rand(2, 5, 8, 8))    # 5 channels is not an image


# ----------------------------------------------------------------- image_grid

@pytest.mark.parametrize("make", [float_images, uint8_images,
                                  lambda n: list(float_images(n)),
                                  lambda n: list(uint8_images(n))],
                         ids=["float-tensor", "uint8-array", "list-of-tensors", "list-of-arrays"])
def test_image_grid_one_axes_per_image(make):
    fig = viz.image_grid(make(10), ncols=4, title="ten images")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 12            # 3 rows of 4; the last 2 cells are empty
    assert n_images(fig) == 10
    draw(fig)


def test_image_grid_small_images_use_nearest_and_captions_are_wrapped():
    captions = [f"a small red circle above a big blue square number {i}" for i in range(3)]
    fig = viz.image_grid(float_images(3), captions=captions)
    assert len(fig.axes) == 3
    assert fig.axes[0].images[0].get_interpolation() == "nearest"
    label = fig.axes[0].get_xlabel()
    assert "\n" in label and "circle" in label
    draw(fig)


def test_image_grid_checks_caption_count():
    with pytest.raises(ValueError):
        viz.image_grid(float_images(3), captions=["only one"])


def test_image_grid_into_existing_axes():
    fig, (left, right) = plt.subplots(1, 2)
    plt.close(fig)
    out = viz.image_grid(uint8_images(6), captions=list("abcdef"), ncols=3, ax=left)
    assert out is fig
    assert len(left.images) == 1          # pasted into one picture
    assert len(left.texts) == 6
    draw(fig)


def test_figures_are_closed_so_notebooks_show_them_once():
    before = plt.get_fignums()
    viz.image_grid(float_images(2))
    viz.loss_curves({"loss": [1.0, 0.5]})
    assert plt.get_fignums() == before


# ----------------------------------------------------------------- compare

def test_compare_one_row_per_label():
    rows = {"real": uint8_images(4), "GAN": float_images(4), "VAE": list(float_images(3))}
    fig = viz.compare(rows, captions=["p0", "p1", "p2", "p3"])
    assert len(fig.axes) == 3 * 4
    assert n_images(fig) == 4 + 4 + 3     # the VAE row is one short
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["real", "GAN", "VAE"]
    draw(fig)


def test_compare_ncols_cuts_rows():
    fig = viz.compare({"a": float_images(5), "b": float_images(5)}, ncols=2)
    assert len(fig.axes) == 4 and n_images(fig) == 4


# ----------------------------------------------------------------- curves

def test_loss_curves_plain_lists_and_step_pairs():
    history = {"generator": [1.0 / (i + 1) for i in range(50)],
               "discriminator": [(10 * i, 0.7) for i in range(50)]}
    fig = viz.loss_curves(history, logy=True)
    (ax,) = fig.axes
    assert len(ax.lines) == 4             # raw + smoothed, per loss
    assert ax.get_yscale() == "log"
    steps = ax.lines[2].get_xdata()
    assert steps[-1] == 490
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["generator", "discriminator"]
    draw(fig)


def test_loss_curves_without_smoothing_and_empty_series():
    fig = viz.loss_curves({"loss": [3.0, 2.0, 1.0], "empty": []}, smooth=0)
    assert len(fig.axes[0].lines) == 1


def test_smooth_curve_starts_at_first_value_and_is_smoother():
    values = np.array([1.0, 0.0] * 50)
    out = viz.smooth_curve(values, 0.9)
    assert out[0] == pytest.approx(1.0)
    assert out[20:].std() < values[20:].std()


# ----------------------------------------------------------------- numbers

def test_bar_labels_every_bar():
    fig = viz.bar({"GAN": 0.4, "VAE": 0.3, "diffusion": 0.8}, reference=0.125, ylabel="accuracy")
    (ax,) = fig.axes
    assert len(ax.patches) == 3
    assert len(ax.lines) == 1             # the reference line
    draw(fig)


def test_heatmap_annotates_small_matrices_only():
    small = torch.eye(4)
    fig = viz.heatmap(small, row_labels=list("abcd"), col_labels=list("wxyz"))
    ax = fig.axes[0]
    assert len(fig.axes) == 2             # the matrix and its colour bar
    assert len(ax.images) == 1 and len(ax.texts) == 16
    draw(fig)
    big = viz.heatmap(np.random.rand(20, 20), colorbar=False)
    assert len(big.axes) == 1 and len(big.axes[0].texts) == 0


def test_scatter_embeddings_one_collection_per_label():
    points = torch.randn(30, 2)
    labels = ["red", "green", "blue"] * 10
    fig = viz.scatter_embeddings(points, labels, title="CLIP image embeddings")
    (ax,) = fig.axes
    assert len(ax.collections) == 3
    assert len(ax.get_legend().get_texts()) == 3
    draw(fig)
    with pytest.raises(ValueError):
        viz.scatter_embeddings(np.zeros((5, 3)))


# ----------------------------------------------------------------- LivePlot

def test_liveplot_does_nothing_outside_a_kernel(monkeypatch):
    drawn = []
    monkeypatch.setattr(viz.LivePlot, "_draw", lambda self, history: drawn.append(history))
    before = plt.get_fignums()
    live = viz.LivePlot(every_s=0.0)
    assert viz.in_notebook() is False
    assert live.enabled is False
    live.update({"loss": [1.0, 0.5]})
    live.close({"loss": [1.0, 0.5, 0.2]})
    assert drawn == []
    assert plt.get_fignums() == before


def test_liveplot_redraws_at_most_every_every_s(monkeypatch):
    drawn = []
    monkeypatch.setattr(viz.LivePlot, "_draw", lambda self, history: drawn.append(len(history["loss"])))
    live = viz.LivePlot(every_s=3600.0)
    live.enabled = True                   # pretend to be in a notebook
    live.update({"loss": [1.0]})          # the first update draws
    live.update({"loss": [1.0, 0.9]})     # too soon: skipped
    live.close({"loss": [1.0, 0.9, 0.8]})  # the final state is always drawn
    assert drawn == [1, 3]


@pytest.mark.parametrize("names", [
    ["real, own captions", "real, shuffled captions", "renderer, own captions", "noise, own captions"],
    ["canonical", "training synonym", "unseen synonym"],
    [f"a rather long category name {i}" for i in range(8)],
])
def test_bar_names_never_overlap_and_the_reference_hides_no_value(names):
    """Item 9: notebook 02's CLIP-score chart and 01's synonyms chart had overlapping labels;
    notebook 00's legend hid a value."""
    fig = viz.bar({n: 0.9 for n in names}, reference=0.5, title="t")
    (ax,) = fig.axes
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    assert len(boxes) == len(names)
    assert _no_overlap(boxes), [b.bounds for b in boxes]
    assert ax.get_legend() is None                       # no legend box over the bars
    value_boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text() == "0.90"]
    label = next(t for t in ax.texts if t.get_text() == "chance").get_window_extent(renderer)
    assert not any(label.overlaps(b) for b in value_boxes)


def _no_overlap(boxes) -> bool:
    return not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
