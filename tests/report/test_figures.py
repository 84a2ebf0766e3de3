"""Figures as a reader sees them: not blank, titled, labelled, legends off the data, readable class names.

The drawing functions return the matplotlib Figure, so the checks look at its axes, lines and texts
instead of only at the PNG header.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wsol.report.attack import AttackRun, attack_figures, draw_box_plots, draw_cosine_histograms, draw_eps_sweep, draw_map_pairs
from wsol.report.figures import draw_overlay_grid, pyplot, save_figure
from wsol.report.robustness_figures import draw_class_accuracy_vs_eps, draw_drop_heatmap, plot_drop_heatmap

NAMES = ["disc", "square", "triangle", "plus", "ring", "bars", "cross", "checker", "diamond", "dots"]


def _png_pixels(path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(path)[..., :3]


def _extent(artist, fig):
    return artist.get_window_extent(fig.canvas.get_renderer())


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    pyplot().close("all")


def test_overlay_grid_draws_gt_red_and_prediction_green(tmp_path) -> None:
    images = torch.full((2, 3, 32, 32), 0.5)
    maps = torch.zeros(2, 32, 32)
    gt = [torch.tensor([[4.0, 4.0, 28.0, 28.0]]), torch.zeros(0, 4)]
    pred = [torch.zeros(0, 4), torch.tensor([[2.0, 2.0, 20.0, 20.0]])]
    out = save_figure(draw_overlay_grid(images, maps=maps, gt_boxes=gt, pred_boxes=pred, titles=["a", "b"]), tmp_path / "grid.png")
    pixels = _png_pixels(out)
    red = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.2) & (pixels[..., 2] < 0.2)
    green = (pixels[..., 1] > 0.9) & (pixels[..., 0] < 0.2) & (pixels[..., 2] < 0.2)
    assert red.sum() > 20 and green.sum() > 20
    assert np.nonzero(red)[1].mean() < np.nonzero(green)[1].mean()


def test_overlay_grid_says_what_its_colours_are() -> None:
    images = torch.rand(3, 3, 16, 16)
    masks = [torch.zeros(16, 16, dtype=torch.bool) for _ in range(3)]
    masks[0][4:10, 4:10] = True
    fig = draw_overlay_grid(images, maps=torch.rand(3, 16, 16), gt_boxes=[torch.tensor([[1.0, 1, 8, 8]])] * 3,
                            pred_boxes=[torch.zeros(0, 4)] * 3, masks=masks, titles=["a", "b", "c"], title="grad maps", pred_label="predicted box (0.2)")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["ground-truth box", "predicted box (0.2)", "ground-truth mask"]
    assert fig.get_suptitle() == "grad maps"
    colorbars = [ax for ax in fig.axes if ax.get_ylabel().startswith("attribution")]
    assert len(colorbars) == 1 and colorbars[0].get_ylim() == (0.0, 1.0)
    assert sum(1 for ax in fig.axes if ax.images) == 3
    without = draw_overlay_grid(images, gt_boxes=[torch.zeros(0, 4)] * 3)
    assert [t.get_text() for t in without.legends[0].get_texts()] == ["ground-truth box"]
    assert not any(ax.get_ylabel() for ax in without.axes)


def test_saved_figures_are_not_blank(tmp_path) -> None:
    acc = torch.linspace(1, 0, 5)[:, None].repeat(1, 3)
    path = plot_drop_heatmap(acc[1:] - acc[:-1], ["0→2", "2→4", "4→6", "6→8"], tmp_path / "drops.png", ["a", "b", "c"])
    pixels = _png_pixels(path)
    assert pixels.reshape(-1, 3).std(axis=0).max() > 0.05
    plt = pyplot()
    blank = save_figure(plt.figure(figsize=(2, 2)), tmp_path / "blank.png")
    assert _png_pixels(blank).reshape(-1, 3).std(axis=0).max() == 0.0


def test_accuracy_vs_eps_has_one_line_a_class_on_a_true_eps_axis_and_a_legend_off_the_data() -> None:
    torch.manual_seed(0)
    acc = torch.sort(torch.rand(5, 10), dim=0, descending=True).values
    fig = draw_class_accuracy_vs_eps(acc, [0, 1, 2, 4, 8], NAMES, title="natural: accuracy per class against ε")
    ax = fig.axes[0]
    assert len(ax.lines) == 10 and list(ax.lines[0].get_xdata()) == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert ax.get_title() == "natural: accuracy per class against ε"
    assert "255" in ax.get_xlabel() and "fraction" in ax.get_ylabel()
    low, high = ax.get_ylim()
    assert low <= 0 and 1 <= high <= 1.1
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == NAMES
    assert not _extent(legend, fig).overlaps(_extent(ax, fig))
    assert draw_class_accuracy_vs_eps(acc, [0, 1, 2, 4, 8]).axes[0].get_title()


def test_drop_heatmap_has_readable_class_names_a_zero_anchored_colour_bar_and_labelled_axes() -> None:
    drops = -torch.rand(4, 10)
    drops[0, 0] = -0.9
    fig = draw_drop_heatmap(drops, ["0→2", "2→4", "4→6", "6→8"], NAMES, title="drops", row_axis="ε step (×1/255)")
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticklabels()]
    assert [t.get_text() for t in ticks] == NAMES
    boxes = [_extent(t, fig) for t in ticks]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
    assert ax.get_xlabel() == "class" and ax.get_ylabel() == "ε step (×1/255)"
    assert ax.images[0].get_clim() == pytest.approx((float(drops.min()), 0.0))
    colorbar = fig.axes[1]
    assert "fraction" in colorbar.get_ylabel()
    texts = {t.get_text(): t.get_color() for t in ax.texts}
    assert len(ax.texts) == 40 and texts["-0.90"] == "white"


def test_accuracy_lines_name_a_class_without_samples_in_the_legend() -> None:
    acc = torch.rand(3, 10)
    acc[:, 2] = float("nan")
    labels = [t.get_text() for t in draw_class_accuracy_vs_eps(acc, [0, 4, 8], NAMES).axes[0].get_legend().get_texts()]
    assert labels[2] == f"{NAMES[2]} (no sample)" and labels[3] == NAMES[3]


def test_drop_heatmap_writes_a_class_without_samples_as_the_tables_do_not_as_nan() -> None:
    drops = -torch.rand(2, 10)
    drops[:, 3] = float("nan")  # no test sample of class 3 among those drawn
    ax = draw_drop_heatmap(drops, ["natural", "art"], NAMES).axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "nan" not in texts and texts.count("–") == 2
    assert ax.get_xlabel() == "class (–: no test sample of it among those drawn)"


def _run(folder, method: str, eps: str, ci: float, cos: np.ndarray, inter: np.ndarray) -> AttackRun:
    stats = {"mean": 50.0, "ci_low": 50.0 - ci, "ci_high": 50.0 + ci, "n": len(inter)}
    summary = {"config": {"attack": "attribution", "method": method, "attribution": "grad", "objective": "topk", "k": 20, "eps": eps,
                          "steps": 2, "checkpoint": f"{method}.safetensors"},
               "metrics": {"topk_intersection": dict(stats), "kendall": dict(stats)}}
    return AttackRun(folder, summary, {"topk_intersection": inter, "kendall": inter, "cos_x_grad": cos})


def test_attack_figures_have_titles_labels_one_box_a_run_and_one_line_a_sweep(tmp_path) -> None:
    rng = np.random.default_rng(0)
    runs = [_run(tmp_path / f"nat{e}", "natural", f"{e}/255", 5.0, rng.normal(0, 0.1, 30), rng.random(8)) for e in (2, 8)]
    runs.append(_run(tmp_path / "art8", "art", "8/255", 5.0, rng.normal(0.5, 0.1, 30), rng.random(8)))
    boxes = draw_box_plots(runs)
    assert "Fig. 11" in boxes.get_suptitle() and "k=20" in boxes.get_suptitle()
    for ax in boxes.axes:
        assert ax.get_ylabel().endswith("(%)") and len(ax.get_xticklabels()) == 3
        assert len(ax.lines) == 3 * 7, "a box a run: box, median, two whiskers, two caps, fliers"
    runs[0].columns["topk_intersection"] = np.full(8, np.nan)
    assert [t.get_text() for t in draw_box_plots(runs).axes[0].texts] == ["no attacked\nsample"]
    sweep = draw_eps_sweep(runs)
    assert "Fig. 12" in sweep.get_suptitle()
    for ax in sweep.axes:
        assert ax.get_xlabel() == "ε (×1/255)" and ax.get_ylabel().endswith("(%)") and ax.get_legend() is None
    assert [t.get_text() for t in sweep.legends[0].get_texts()] == ["natural / grad"]
    cos = draw_cosine_histograms(runs)
    ax = cos.axes[0]
    assert "Fig. 6" in ax.get_title() and ax.get_ylabel() == "samples (count)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["natural, n=30", "art, n=30"]
    natural, art = ax.patches[0].get_path().vertices[:, 0], ax.patches[1].get_path().vertices[:, 0]
    assert (natural.min(), natural.max()) == pytest.approx((min(natural.min(), art.min()), max(natural.max(), art.max())))
    assert (art.min(), art.max()) == pytest.approx((natural.min(), natural.max())), "both models share one set of bins"


def test_map_pairs_show_only_attacked_samples_on_one_colour_scale_a_row(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    maps = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    maps[1] = np.nan
    np.savez(folder / "maps.npz", index=np.array([4, 7, 9]), image=np.random.rand(3, 3, 8, 8), x_adv=np.random.rand(3, 3, 8, 8),
             original_map=maps, attacked_map=2 * maps)
    run = _run(folder, "art", "8/255", 1.0, np.zeros(3), np.zeros(3))
    fig = draw_map_pairs(run, "run")
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().startswith("sample")]
    assert rows == ["sample 4", "sample 9"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["image", "original map", "attacked image", "attacked map"]
    original, attacked = [ax.images[0] for ax in fig.axes[:4] if ax.images and ax.images[0].get_array().ndim == 2]
    assert original.get_clim() == attacked.get_clim() == pytest.approx((float(maps[0].min()), float(2 * maps[0].max())))
    assert "run" in fig.get_suptitle()
    maps[:] = np.nan
    np.savez(folder / "maps.npz", index=np.array([4, 7, 9]), image=np.random.rand(3, 3, 8, 8), x_adv=np.random.rand(3, 3, 8, 8),
             original_map=maps, attacked_map=maps)
    assert draw_map_pairs(run, "run") is None


def test_maps_figure_of_many_kept_maps_draws_the_first_rows_and_says_so(tmp_path) -> None:
    """--n-maps 400 kept 400 rows: a figure of them all is over matplotlib's 2^16-pixel limit (a traceback)."""
    from wsol.report.attack import MAX_MAP_ROWS, map_pairs

    folder = tmp_path / "run"
    folder.mkdir()
    n = 400
    np.savez(folder / "maps.npz", index=np.arange(n), image=np.random.rand(n, 3, 4, 4), x_adv=np.random.rand(n, 3, 4, 4),
             original_map=np.random.rand(n, 4, 4), attacked_map=np.random.rand(n, 4, 4))
    run = _run(folder, "art", "8/255", 1.0, np.zeros(3), np.zeros(3))
    fig = draw_map_pairs(run, "run")
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().startswith("sample")]
    assert rows == [f"sample {i}" for i in range(MAX_MAP_ROWS)]
    assert f"first {MAX_MAP_ROWS} of {n} attacked samples" in fig.get_suptitle()
    assert map_pairs(run, tmp_path / "maps.png", "run").read_bytes()[:4] == b"\x89PNG"


def test_attack_figures_note_a_run_whose_kept_samples_were_none_attacked(tmp_path, monkeypatch) -> None:
    import wsol.report.attack as report

    folder = tmp_path / "run"
    folder.mkdir()
    nan = np.full((2, 8, 8), np.nan, dtype=np.float32)
    np.savez(folder / "maps.npz", index=np.array([0, 1]), image=np.random.rand(2, 3, 8, 8), x_adv=np.random.rand(2, 3, 8, 8),
             original_map=nan, attacked_map=nan)
    run = _run(folder, "art", "8/255", 1.0, np.zeros(3), np.zeros(3))
    monkeypatch.setattr(report, "load_runs", lambda folders: [run])
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "maps_other.png").write_bytes(b"an earlier call's figure")
    written, notes = attack_figures([folder], tmp_path / "figs")
    assert [p.name for p in written] == ["fig11_boxplots.png", "fig6_cosine.png"]
    assert any("none of the samples kept in its maps.npz" in n for n in notes)
    assert any(n.endswith("also holds maps_other.png from an earlier call, of runs not given now") for n in notes)  # would pass for one of these


def test_figures_of_200_classes_stay_readable_and_of_a_bounded_size(tmp_path) -> None:
    from wsol.report.robustness_figures import plot_class_accuracy_vs_eps

    names = [f"{i:03d}.Black_footed_Albatross" for i in range(200)]
    acc = torch.sort(torch.rand(3, 200), dim=0, descending=True).values
    fig = draw_class_accuracy_vs_eps(acc, [0, 2, 4], names)
    assert fig.axes[0].get_legend() is None and fig.axes[1].get_ylabel().startswith("class index")
    pyplot().close(fig)
    for path in (plot_class_accuracy_vs_eps(acc, [0, 2, 4], tmp_path / "sweep.png", names),
                 plot_drop_heatmap(acc[1:] - acc[:-1], ["0→2", "2→4"], tmp_path / "drops.png", names)):
        height, width = _png_pixels(path).shape[:2]
        assert width < 4000 and height < 1000
