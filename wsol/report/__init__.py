"""Figures for reports (matplotlib with the Agg backend; files written atomically)."""
from wsol.report.figures import overlay_grid

__all__ = ["overlay_grid"]
