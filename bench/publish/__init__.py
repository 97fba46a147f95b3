"""Publishing: finished cell records -> tables, comparisons, figures, the leaderboard files.

    leaderboard.py     collect records into rows; md/csv/json/html/tex tables
    report.py          paired comparisons, per-class tables, the report and its figures
    figures.py         matplotlib figures (Agg, PNG)
    dataset_figure.py  ``bench data show``: example images per class with masks outlined
"""
