"""Publishing: finished cell records -> tables, comparisons, figures, the leaderboard files.

One job per module, each importing only the ones above it:

    text.py            one number format (scores, CIs, p-values, costs), escaping, md/plain tables
    collect.py         cell records -> the rows frame (MetricColumn, gain over control, sorting)
    provenance.py      where the numbers come from; legends of the settings fingerprints
    comparisons.py     per-image values, paired comparisons (test of the mean, verdicts), gain CIs, per class
    analysis.py        per family: ranks with intervals, metric power, sanity gates, agreement, aggregate,
                       per class, across models (the statistics tables)
    classification.py  the study's per-class precision/recall/F1 tables of each model
    tables.py          the human tables (leaderboard, failed cells, comparisons, per class)
    stat_tables.py     the human tables of the statistics; their Markdown sections
    summary.py         the compact plain-text table printed in a terminal
    page.py            the HTML page (self-contained, sortable): render_page
    formats.py         render one format: md, csv, json, html, tex
    figures.py         matplotlib figures (Agg; palette PNG plots, WebP overlays)
    report.py          report.md and the figures it shows
    leaderboard.py     build: collect -> compare -> figures -> every file; where the files go
    dataset_figure.py  ``bench data show``: example images per class with masks outlined
"""
