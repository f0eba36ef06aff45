"""The campaign report: one self-contained HTML file and its PNGs, from the results database.

Learning curves (mean and 95% band per activation, per task: the paper's figures), the
final metric per seed, the comparison table with CIs and Holm-adjusted p-values, a forest
plot of effect sizes, the average-rank (critical difference) diagram across tasks, one
plain sentence per task and pair, and the protocol that produced it all.

The package: ``words`` (numbers and sentences), ``figures`` (the PNGs), ``page`` (report.html)
and ``folder`` (where it is written, whole, and what may be replaced).
"""

from bru_core.report.figures import COLORS, plot_curves, plot_forest, plot_ranks, plot_seeds
from bru_core.report.folder import REPORT_MARKER, report_path_error, write_report
from bru_core.report.page import CSS
from bru_core.report.words import family_size, fmt_diff, fmt_p, fmt_value, headline_rows, metric_info, sentence

__all__ = [
    "COLORS",
    "CSS",
    "REPORT_MARKER",
    "family_size",
    "fmt_diff",
    "fmt_p",
    "fmt_value",
    "headline_rows",
    "metric_info",
    "plot_curves",
    "plot_forest",
    "plot_ranks",
    "plot_seeds",
    "report_path_error",
    "sentence",
    "write_report",
]
