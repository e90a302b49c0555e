"""The run's network story for people: the TensorBoard dashboards (layout.py), the console
table with its explanations and next commands (table.py), and report.png (png.py)."""
from __future__ import annotations

from train.comm.measure.layout import chart_tags, network_layout
from train.comm.measure.png import write_png
from train.comm.measure.table import link_rate_gbit_s, next_steps, notes, summary_table

__all__ = ["chart_tags", "link_rate_gbit_s", "network_layout", "next_steps", "notes", "summary_table", "write_png"]
