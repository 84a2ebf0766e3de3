"""Figures for reports (matplotlib with the Agg backend; files written atomically)."""
from wsol.report.figures import draw_overlay_grid, save_figure

__all__ = ["draw_overlay_grid", "save_figure"]
