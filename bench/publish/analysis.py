"""The statistics of a leaderboard, per family of comparable rows: ranks, power, sanity, agreement.

:func:`analyse` reads a :func:`bench.publish.collect.collect` frame and, per family (one
dataset, model, weights, perturbation and settings fingerprint: rows are compared only within
one) and per metric column, the per-image values the cell records point to
(:func:`bench.publish.comparisons.per_image_frame`, aligned by image id). Nothing here names a
plugin: explainers are told apart by their role (:mod:`bench.pipeline.controls`), metrics by the
fields their records carry (family, direction, columns).

What it computes (each a :class:`pandas.DataFrame` of :class:`Analysis`, the family's columns first):

- ``ranks`` (:func:`bench.ranking.rank_methods`): the methods (role ``method``) ranked on the
  images valid for every ranked method (a method with no finite value is left out, in
  ``notes``), a paired-bootstrap interval of each rank and P(best); the controls follow as
  reference rows (their mean on the same images, no rank). ``power`` and ``flags`` say when
  the metric has no power here and which sanity gates the explainer fails.
- ``comparisons`` (:func:`bench.publish.comparisons.leaderboard_comparisons`): the paired tests
  of the mean difference, Holm within the family, with a verdict and ``leaderboard.min_effect``.
- ``power`` (:func:`bench.ranking.control_power`): for the metrics of the families the
  controls' order is defined for (:attr:`StatisticsOptions.power_families`), positive - null
  and null - negative control as paired differences with CIs, and a verdict. The null
  control is the family's gain reference; each positive control is paired with the negative
  control of the same mask where their parameters (or, failing that, their names) show it,
  else each is reported on its own. ``measured_on`` says where: the controls, their
  parameters (the mask they read) and the images.
- ``normalised`` (:func:`bench.ranking.normalised_scores`): for the primary metric,
  (score - null) / (positive - null) per explainer, with its CI, where both controls ran.
- ``sanity`` (:func:`bench.stats.sanity_flags`): per explainer, the randomisation-family
  metrics' means against ``leaderboard.sanity_randomisation`` / ``sanity_random_logit``. A
  randomisation metric whose record holds the per-image column :data:`FULL_RANDOMISATION_COLUMN`
  is a cascading model-randomisation test: the gate reads that column (the similarity after
  the whole network is randomised); any other randomisation-family metric is read as a
  class-randomisation (random-logit) test on its headline values.
- ``kendall`` / ``alpha`` (:func:`bench.ranking.kendall_matrix`, :func:`bench.ranking.rank_alpha`):
  Kendall's tau between the metrics' method rankings and Krippendorff's alpha of each
  metric's per-image rankings, per family (methods only).
- ``aggregate`` (:func:`bench.ranking.aggregate_ranks`): the mean rank over the metrics of
  ``leaderboard.aggregate`` (metric ids, names or families; default the faithfulness family),
  labelled :data:`bench.ranking.AGGREGATE_LABEL`.
- ``per_class``: every metric per true class, every explainer, with a bootstrap CI.
- ``cross_model``: per dataset and perturbation, every model's explainers on the common image
  set (the test images every model explained, i.e. classified correctly).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from bench import ranking as rk
from bench import stats as st
from bench.pipeline.controls import METHOD_ROLE, NULL_CONTROL_ROLE, is_control
from bench.publish.collect import (
    KEY_COLUMNS,
    MetricColumn,
    bootstrap_resamples,
    confidence_of,
    pair_columns,
    primary_column,
    shown_metric_columns,
)
from bench.publish.comparisons import (
    COMPARISON_COLUMNS,
    COMPARISON_SCOPES,
    class_names_of,
    leaderboard_comparisons,
    metric_result,
    per_image_frame,
    reference_label,
    row_labels,
    without_attrs,
)

__all__ = [
    "ANALYSIS_TABLES",
    "FULL_RANDOMISATION_COLUMN",
    "NO_POWER",
    "Analysis",
    "StatisticsOptions",
    "analyse",
    "batched_cis",
    "options_from_config",
    "options_from_manifests",
    "pair_controls",
]

#: The per-image column a cascading model-randomisation metric records for the similarity after
#: the whole network is randomised (its record's ``columns`` name it): the sanity gate reads it.
FULL_RANDOMISATION_COLUMN = "last"
#: The mark of a metric whose controls' verdict is not :data:`bench.ranking.CONTROLS_CORRECT`.
NO_POWER = "no power here"
#: The power of a metric the controls were not run for (or whose family they do not order).
NOT_MEASURED = ""
#: The tables of :meth:`Analysis.tables`, in that order.
ANALYSIS_TABLES: tuple[str, ...] = ("ranks", "comparisons", "power", "normalised", "sanity", "kendall",
                                    "alpha", "aggregate", "per_class", "cross_model", "notes")
POSITIVE_ROLE, NEGATIVE_ROLE = "positive-control", "negative-control"
SANITY_FAMILY = "randomisation"

_RANK_COLS = ("metric", "explainer", "explainer_params", "label", "role", "cell_id", "mean", "rank", "rank_low",
              "rank_high", "p_best", "n", "n_dropped", "power", "flags")
_POWER_COLS = ("metric", "positive_control", "null_control", "negative_control", "positive_minus_null",
               "positive_minus_null_ci_low", "positive_minus_null_ci_high", "null_minus_negative",
               "null_minus_negative_ci_low", "null_minus_negative_ci_high", "verdict", "n", "n_dropped",
               "measured_on")
_NORM_COLS = ("metric", "explainer", "explainer_params", "label", "role", "positive_control", "null_control",
              "normalised", "normalised_ci_low", "normalised_ci_high", "n", "n_dropped", "flags")
_SANITY_COLS = ("explainer", "explainer_params", "label", "role", "cell_id", "metric", "check", "column", "value",
                "n", "threshold", "failed", "flag")
_KENDALL_COLS = ("metric_a", "metric_b", "tau", "n_methods")
_ALPHA_COLS = ("metric", "alpha", "n", "n_dropped", "n_methods")
_AGG_COLS = ("explainer", "explainer_params", "label", "cell_id", "mean_rank", "mean_rank_low", "mean_rank_high",
             "n", "n_dropped", "metrics", "flags")
_CLASS_COLS = ("metric", "explainer", "explainer_params", "label", "role", "class", "mean", "ci_low", "ci_high",
               "n")
_CROSS_COLS = ("dataset", "perturbation", "metric", "explainer", "explainer_params", "role", "model", "weights",
               "settings", "mean", "ci_low", "ci_high", "n", "n_common")
_NOTE_COLS = ("metric", "note")


# ---------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class StatisticsOptions:
    """What :func:`analyse` computes and with which thresholds (the ``[leaderboard]`` keys).

    ``min_effect`` (``leaderboard.min_effect``): the smallest mean difference reported as one,
    in the metric's units: a number, or a mapping metric id/name -> number (``"default"``
    for the rest). ``sanity_randomisation`` / ``sanity_random_logit``: the gates' thresholds.
    ``aggregate``: metric ids, names or families averaged by the aggregate rank.
    ``comparisons``: :data:`bench.publish.comparisons.COMPARISON_SCOPES`. ``power_families``:
    the metric families whose controls' order (positive > null > negative) is defined.
    ``n_resamples`` / ``confidence``: None = the runs' ``aopc.bootstrap`` / the rows' level.
    """

    min_effect: float | Mapping[str, float] = st.DEFAULT_MIN_EFFECT
    sanity_randomisation: float = 0.5
    sanity_random_logit: float = 0.5
    aggregate: tuple[str, ...] = ("faithfulness",)
    comparisons: str = "primary"
    power_families: tuple[str, ...] = ("faithfulness", "localisation")
    n_resamples: int | None = None
    confidence: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.comparisons not in COMPARISON_SCOPES:
            raise ValueError(f"comparisons = {self.comparisons!r}; choose one of {', '.join(COMPARISON_SCOPES)}")
        object.__setattr__(self, "aggregate", tuple(str(a) for a in self.aggregate))
        object.__setattr__(self, "power_families", tuple(str(a) for a in self.power_families))

    def to_dict(self) -> dict[str, Any]:
        me = dict(self.min_effect) if isinstance(self.min_effect, Mapping) else float(self.min_effect)
        return {"min_effect": me, "sanity_randomisation": self.sanity_randomisation,
                "sanity_random_logit": self.sanity_random_logit, "aggregate": list(self.aggregate),
                "comparisons": self.comparisons, "power_families": list(self.power_families),
                "n_resamples": self.n_resamples, "confidence": self.confidence, "seed": self.seed}


#: The ``[leaderboard]`` config keys read by :func:`options_from_config` (option name = key).
CONFIG_KEYS: tuple[str, ...] = ("min_effect", "sanity_randomisation", "sanity_random_logit", "aggregate",
                                "comparisons")


def options_from_config(section: Mapping[str, Any] | None, **overrides: Any) -> StatisticsOptions:
    """:class:`StatisticsOptions` from a resolved config's ``[leaderboard]`` table (missing keys: defaults)."""
    given = {k: section[k] for k in CONFIG_KEYS if isinstance(section, Mapping) and k in section}
    if "aggregate" in given:
        given["aggregate"] = tuple(given["aggregate"]) or StatisticsOptions().aggregate
    return replace(StatisticsOptions(**given), **overrides)


def options_from_manifests(manifests: Mapping[str, Mapping[str, Any]], **overrides: Any) -> StatisticsOptions:
    """The options of the most recent run's resolved config (its ``[leaderboard]`` table)."""
    latest: Mapping[str, Any] | None = None
    stamp = ""
    for rid in sorted(manifests):
        m = manifests[rid]
        t = str(m.get("finished") or m.get("created") or "")
        if latest is None or t >= stamp:
            latest, stamp = m, t
    section = ((latest or {}).get("config") or {}).get("leaderboard")
    return options_from_config(section if isinstance(section, Mapping) else None, **overrides)


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def batched_cis(values: Sequence[np.ndarray], *, confidence: float = 0.95, n_resamples: int = 10_000,
                seed: int = 0) -> list[tuple[float, float]]:
    """:func:`bench.stats.bootstrap_ci` of each array, computed in batches.

    The resampled rows of :func:`bench.stats.bootstrap_row_means` depend only on the number
    of values and the seed, so arrays of the same length share one draw: the result equals
    ``[bootstrap_ci(v, confidence, n_resamples, seed) for v in values]``.
    """
    out: list[tuple[float, float]] = [(math.nan, math.nan)] * len(values)
    by_n: dict[int, list[int]] = {}
    for i, v in enumerate(values):
        v = np.asarray(v, np.float64).reshape(-1)
        if v.size == 0:
            continue
        if np.all(v == v[0]):
            out[i] = (float(v[0]), float(v[0]))
            continue
        by_n.setdefault(v.size, []).append(i)
    for _n, idx in by_n.items():
        stacked = np.column_stack([np.asarray(values[i], np.float64).reshape(-1) for i in idx])
        means = st.bootstrap_row_means(stacked, n_resamples=n_resamples, seed=seed)
        a = (1.0 - float(confidence)) / 2.0
        lo, hi = np.quantile(means, [a, 1.0 - a], axis=0)  # percentile_interval, every column at once
        for j, i in enumerate(idx):
            out[i] = (float(lo[j]), float(hi[j]))
    return out


def _tokens(name: str) -> set[str]:
    return {t for t in str(name).replace("_", "-").replace(".", "-").split("-") if t}


def pair_controls(positives: Sequence[tuple[str, Mapping[str, Any]]],
                  negatives: Sequence[tuple[str, Mapping[str, Any]]]) -> list[tuple[str | None, str | None]]:
    """Pairs (positive, negative) of controls that read the same thing; the others on their own.

    ``positives`` / ``negatives``: ``(label, explainer params)``. A positive control is paired
    with the negative control whose (non-empty) parameters are the same (e.g. the same mask);
    failing that, with the one whose name shares the most name tokens with it (``x-tumour`` /
    ``anti-x-tumour``) when that is unambiguous; with one of each, they pair. Each unpaired
    control is returned alone (``(p, None)`` / ``(None, n)``).
    """
    if len(positives) == 1 and len(negatives) == 1:
        return [(positives[0][0], negatives[0][0])]
    pairs: list[tuple[str | None, str | None]] = []
    free = [n for n, _ in negatives]
    params_of = {n: dict(params) for n, params in negatives}
    for p, p_params in positives:
        same = [n for n in free if p_params and params_of[n] == dict(p_params)]
        if len(same) == 1:
            pairs.append((p, same[0]))
            free.remove(same[0])
            continue
        pool = same or free
        scores = {n: len(_tokens(p) & _tokens(n)) for n in pool}
        best = max(scores.values(), default=0)
        found = [n for n in pool if scores[n] == best] if best > 0 else []
        if len(found) == 1:
            pairs.append((p, found[0]))
            free.remove(found[0])
        else:
            pairs.append((p, None))
    pairs += [(None, n) for n in free]
    return pairs


def _params_text(params: Mapping[str, Any]) -> str:
    if not params:
        return ""
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + "}"


def _frame(rows: Iterable[Mapping[str, Any]], group_cols: Sequence[str], cols: Sequence[str]) -> pd.DataFrame:
    columns = [*group_cols, *cols]
    data = list(rows)
    if not data:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.DataFrame(data, columns=columns)


@dataclass
class _Member:
    """One row of a family: its label (explainer, plus params where ambiguous), role, row."""

    label: str
    row: dict[str, Any]

    @property
    def explainer(self) -> str:
        return str(self.row.get("explainer", ""))

    @property
    def params(self) -> str:
        return str(self.row.get("explainer_params", ""))

    @property
    def role(self) -> str:
        role = self.row.get("role")
        return role if isinstance(role, str) and role else METHOD_ROLE

    @property
    def key(self) -> tuple[str, ...]:
        return row_key(self.row)

    def ident(self) -> dict[str, Any]:
        return {"explainer": self.explainer, "explainer_params": self.params, "label": self.label,
                "role": self.role, "cell_id": str(self.row.get("cell_id", ""))}


def row_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """A row's identity on the leaderboard (its :data:`bench.publish.collect.KEY_COLUMNS` values)."""
    return tuple(str(row.get(c, "")) for c in KEY_COLUMNS)


# ---------------------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------------------
@dataclass
class Analysis:
    """The statistics tables of one leaderboard (see the module's docstring for each)."""

    group_columns: list[str]
    ranks: pd.DataFrame
    comparisons: pd.DataFrame
    power: pd.DataFrame
    normalised: pd.DataFrame
    sanity: pd.DataFrame
    kendall: pd.DataFrame
    alpha: pd.DataFrame
    aggregate: pd.DataFrame
    per_class: pd.DataFrame
    cross_model: pd.DataFrame
    notes: pd.DataFrame
    options: StatisticsOptions = field(default_factory=StatisticsOptions)
    #: per row (:func:`row_key`): the texts of the sanity gates its explainer fails
    row_flags: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    #: per (family key, metric id): the controls' verdict (``""``: not measured)
    metric_power: dict[tuple[tuple[str, ...], str], str] = field(default_factory=dict)
    #: the metric ids the aggregate rank averaged, per family key
    aggregate_metrics: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    primary: str = ""
    confidence: float = 0.95
    n_resamples: int = 10_000

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table, by name (:data:`ANALYSIS_TABLES`)."""
        return {name: getattr(self, name) for name in ANALYSIS_TABLES}

    def flags_of(self, row: Mapping[str, Any]) -> list[str]:
        """The sanity flags of a leaderboard row (``[]``: passes, or not measured)."""
        return list(self.row_flags.get(row_key(row), []))

    def power_of(self, key: Sequence[Any], metric: str) -> str:
        """The controls' verdict on ``metric`` in the family ``key`` (``""``: not measured)."""
        return self.metric_power.get((tuple(str(k) for k in key), metric), NOT_MEASURED)

    def kendall_matrix(self, key: Sequence[Any]) -> pd.DataFrame:
        """The square Kendall-tau matrix (metric x metric) of one family (empty when not computed)."""
        part = self.kendall[self._mask(self.kendall, key)]
        if part.empty:
            return pd.DataFrame()
        metrics = list(dict.fromkeys([*part["metric_a"], *part["metric_b"]]))
        matrix = pd.DataFrame(np.nan, index=metrics, columns=metrics)
        for a, b, tau in zip(part["metric_a"], part["metric_b"], part["tau"], strict=True):
            matrix.loc[a, b] = tau
            matrix.loc[b, a] = tau
        return matrix

    def part(self, name: str, key: Sequence[Any]) -> pd.DataFrame:
        """The rows of table ``name`` that belong to family ``key`` (group columns dropped)."""
        frame = getattr(self, name)
        return frame[self._mask(frame, key)].drop(columns=[c for c in self.group_columns if c in frame.columns])

    def _mask(self, frame: pd.DataFrame, key: Sequence[Any]) -> pd.Series:
        texts = self._group_texts(frame)
        mask = pd.Series(True, index=frame.index)
        for col, value in zip(self.group_columns, key, strict=False):
            if col in texts:
                mask &= texts[col] == str(value)
        return mask

    def _group_texts(self, frame: pd.DataFrame) -> dict[str, pd.Series]:
        """``frame``'s group columns as text, converted once per frame (a page asks for the
        parts of the same tables hundreds of times)."""
        memo = self.__dict__.setdefault("_texts_memo", {})
        hit = memo.get(id(frame))
        if hit is not None and hit[0] is frame:
            return hit[1]
        texts = {c: frame[c].astype(str) for c in self.group_columns if c in frame.columns}
        memo[id(frame)] = (frame, texts)
        return texts

    def attach(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` with :data:`bench.publish.collect.RANK_COLUMNS` filled: the primary metric's rank,
        interval and P(best) (methods), its power in the row's family, the row's sanity flags."""
        out = without_attrs(df).copy()
        out.attrs = df.attrs  # restored once, at the end of the copy (not into every row read below)
        if out.empty:
            return out
        attrs, out.attrs = out.attrs, {}
        primary = self.ranks[self.ranks["metric"] == self.primary] if len(self.ranks) else self.ranks
        lookup: dict[tuple[str, ...], Mapping[str, Any]] = {}
        for r in primary.to_dict("records"):
            lookup[(*(str(r.get(c, "")) for c in self.group_columns), str(r["explainer"]),
                    str(r["explainer_params"]))] = r
        ranks, lows, highs, bests, powers, flags = [], [], [], [], [], []
        for r in out.to_dict("records"):
            fam = tuple(str(r.get(c, "")) for c in self.group_columns)
            hit = lookup.get((*fam, str(r.get("explainer", "")), str(r.get("explainer_params", ""))), {})
            ranks.append(_f(hit.get("rank")))
            lows.append(_f(hit.get("rank_low")))
            highs.append(_f(hit.get("rank_high")))
            bests.append(_f(hit.get("p_best")))
            powers.append(self.power_of(fam, self.primary))
            flags.append("; ".join(self.flags_of(r)))
        out["rank"], out["rank_low"], out["rank_high"], out["p_best"] = ranks, lows, highs, bests
        out["power"], out["sanity_flags"] = powers, flags
        gates = {}
        for r in self.sanity.to_dict("records") if len(self.sanity) else []:
            if r["failed"]:
                k = (*(str(r.get(c, "")) for c in self.group_columns), str(r["explainer"]), str(r["explainer_params"]))
                gates.setdefault(k, []).append({"check": r["check"], "metric": r["metric"], "value": r["value"],
                                                "threshold": r["threshold"], "text": r["flag"]})
        out["_sanity"] = [gates.get((*(str(r.get(c, "")) for c in self.group_columns), str(r.get("explainer", "")),
                                     str(r.get("explainer_params", ""))), []) for r in out.to_dict("records")]
        out.attrs = attrs
        return out

    def statistics_block(self) -> dict[str, Any]:
        """What was tested and with which settings (the JSON's ``statistics``, the notes' source)."""
        return {
            "test": st.MEAN_TEST,
            "holm": "Holm-Bonferroni within each dataset/model/weights/perturbation/settings family and metric",
            "ranks": ("methods ranked by their mean on the images valid for every ranked method; interval: "
                      f"percentile interval of the rank over {self.n_resamples} paired bootstrap resamples of "
                      "the images (the same images for every method); P(best): share of resamples where it "
                      "is the best (ties share); controls are reference rows, not ranked"),
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "seed": self.options.seed,
            "alpha": 1.0 - self.confidence,
            "min_effect": self.options.to_dict()["min_effect"],
            "default_min_effect": st.DEFAULT_MIN_EFFECT,
            "comparisons": self.options.comparisons,
            "sanity": {"randomisation_threshold": self.options.sanity_randomisation,
                       "random_logit_threshold": self.options.sanity_random_logit,
                       "full_randomisation_column": FULL_RANDOMISATION_COLUMN,
                       "checks": list(st.SANITY_CHECKS)},
            "power": {"verdicts": [rk.CONTROLS_CORRECT, rk.CONTROLS_UNSEPARATED, rk.CONTROLS_BACKWARDS],
                      "families": list(self.options.power_families), "mark": NO_POWER},
            "aggregate": {"label": rk.AGGREGATE_LABEL, "selection": list(self.options.aggregate)},
        }

    def notes_lines(self) -> list[str]:
        """The notes every format prints under its statistics tables (plain text)."""
        b = self.statistics_block()
        me = b["min_effect"]
        me_text = (f"{me:g}" if isinstance(me, float)
                   else ", ".join(f"{k} {v:g}" for k, v in me.items()) + f" (else {st.DEFAULT_MIN_EFFECT:g})")
        return [
            f"Ranks: {b['ranks']}.",
            f"Paired comparisons test the mean difference: {st.MEAN_TEST}; Holm-corrected within each family "
            f"and metric; verdict better / worse at alpha {b['alpha']:g} after Holm, \"negligible\" when "
            f"|A - B| < the minimum effect ({me_text}, in the metric's units) whatever its p.",
            f"Metric power: positive - null and null - negative control, paired, with {100 * self.confidence:g}% "
            f"CIs, for the {', '.join(self.options.power_families)} metrics; a metric whose verdict is not "
            f"\"{rk.CONTROLS_CORRECT}\" is marked \"{NO_POWER}\" beside its ranking. Normalised score = "
            "(score - null) / (positive - null): 0 = the null control, 1 = the positive control.",
            f"Sanity gates: a mean Spearman >= {self.options.sanity_randomisation:g} after the whole network "
            f"is randomised (column {FULL_RANDOMISATION_COLUMN!r} of a cascading randomisation metric) or a mean "
            f"similarity >= {self.options.sanity_random_logit:g} between the explanations of two classes flags the "
            "explainer in every table.",
            f"Aggregate: {rk.AGGREGATE_LABEL} (selected: {', '.join(self.options.aggregate)}).",
            "Agreement: Kendall's tau between the metrics' method rankings, Krippendorff's alpha (ordinal; "
            "units = methods, raters = images) of each metric's per-image rankings; methods only.",
        ]


def _f(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------------------
# the computation
# ---------------------------------------------------------------------------------------
class _Family:
    """One family's members and their per-image values (read once per metric column)."""

    def __init__(self, key: tuple[str, ...], group: pd.DataFrame, manifests: Mapping[str, Any]):
        self.key = key
        self.group = group
        self.members = [_Member(label, dict(row)) for label, (_, row) in
                        zip(row_labels(group), group.iterrows(), strict=True)]
        self.reference = reference_label(group)
        self.manifests = manifests
        self._cache: dict[tuple[str, str], pd.DataFrame | None] = {}

    def frame(self, member: _Member, column: MetricColumn) -> pd.DataFrame | None:
        k = (member.label, column.id)
        if k not in self._cache:
            extra = [FULL_RANDOMISATION_COLUMN] if column.family == SANITY_FAMILY else []
            self._cache[k] = per_image_frame(member.row, column, extra)
        return self._cache[k]

    def values(self, member: _Member, column: MetricColumn) -> pd.Series | None:
        f = self.frame(member, column)
        if f is None:
            return None
        v = f["value"]
        return v[np.isfinite(v.to_numpy())]

    def by_role(self, *roles: str) -> list[_Member]:
        return [m for m in self.members if m.role in roles]

    @property
    def methods(self) -> list[_Member]:
        return [m for m in self.members if not is_control(m.role)]

    def nulls(self) -> list[_Member]:
        if self.reference is not None:
            ref = [m for m in self.members if m.label == self.reference]
            if ref and ref[0].role == NULL_CONTROL_ROLE:
                return ref
        return self.by_role(NULL_CONTROL_ROLE)


def _aligned(series: Mapping[str, pd.Series]) -> pd.DataFrame:
    """Columns aligned by image id (sorted union; NaN where a column has no value)."""
    return pd.DataFrame(dict(series)).sort_index()


def analyse(df: pd.DataFrame, options: StatisticsOptions | None = None, *,
            comparisons: pd.DataFrame | None = None) -> Analysis:
    """Every statistics table of a :func:`bench.publish.collect.collect` frame (see the module's docstring).

    ``options`` default to those of the runs' most recent config (:func:`options_from_manifests`).
    ``comparisons``: already computed paired comparisons to reuse (default: computed here,
    :func:`bench.publish.comparisons.leaderboard_comparisons`). A table that cannot be computed
    for a family (no shared image, too few methods) is left out for it, the reason in ``notes``.
    """
    manifests = df.attrs.get("manifests", {}) if hasattr(df, "attrs") else {}
    opts = options if options is not None else options_from_manifests(manifests)
    conf = opts.confidence if opts.confidence is not None else confidence_of(df)
    b = opts.n_resamples if opts.n_resamples is not None else bootstrap_resamples(manifests)
    seed = opts.seed
    group_cols = pair_columns(df)
    head = primary_column(df)
    primary = head.id if head is not None else ""
    columns = shown_metric_columns(df) if not df.empty else []
    if comparisons is None:
        comparisons = (leaderboard_comparisons(df, scope=opts.comparisons, seed=seed, min_effect=opts.min_effect,
                                               n_resamples=b, confidence=conf)
                       if not df.empty and "_metrics" in df.columns else pd.DataFrame(columns=list(COMPARISON_COLUMNS)))
    rows: dict[str, list[dict[str, Any]]] = {n: [] for n in ANALYSIS_TABLES}
    row_flags: dict[tuple[str, ...], list[str]] = {}
    power_of: dict[tuple[tuple[str, ...], str], str] = {}
    aggregate_metrics: dict[tuple[str, ...], list[str]] = {}
    families: list[_Family] = []
    plain = without_attrs(df)
    if not df.empty and "_metrics" in df.columns and group_cols:
        for key, group in plain.groupby(group_cols, sort=False, dropna=False):
            k = tuple(str(v) for v in (key if isinstance(key, tuple) else (key,)))
            families.append(_Family(k, group, manifests))
    for fam in families:
        fk = dict(zip(group_cols, fam.key, strict=True))

        def note(metric: str, text: str, fk: dict[str, str] = fk) -> None:
            rows["notes"].append({**fk, "metric": metric, "note": text})

        # sanity gates first: their flags go into every other table
        for column in columns:
            if column.family != SANITY_FAMILY:
                continue
            for m in fam.members:
                frame = fam.frame(m, column)
                result = metric_result(m.row, column)
                if frame is None or result is None:
                    continue
                cascade = FULL_RANDOMISATION_COLUMN in (result.columns or {}) and FULL_RANDOMISATION_COLUMN in frame
                col = FULL_RANDOMISATION_COLUMN if cascade else "value"
                v = frame[col].to_numpy(np.float64)
                v = v[np.isfinite(v)]
                value = float(v.mean()) if v.size else math.nan
                check = st.SANITY_CHECKS[0] if cascade else st.SANITY_CHECKS[1]
                threshold = opts.sanity_randomisation if cascade else opts.sanity_random_logit
                flags = st.sanity_flags(value if cascade else None, None if cascade else value,
                                        randomisation_threshold=opts.sanity_randomisation,
                                        random_logit_threshold=opts.sanity_random_logit)
                text = flags[0].text if flags else ""
                if text:
                    texts = row_flags.setdefault(m.key, [])
                    if text not in texts:
                        texts.append(text)
                rows["sanity"].append({**fk, **m.ident(), "metric": column.id, "check": check,
                                       "column": FULL_RANDOMISATION_COLUMN if cascade else (column.name),
                                       "value": value, "n": int(v.size), "threshold": threshold,
                                       "failed": bool(flags), "flag": text})

        def flag_text(m: _Member) -> str:
            return "; ".join(row_flags.get(m.key, []))

        method_means: dict[str, dict[str, float]] = {}
        method_scores: dict[str, pd.DataFrame] = {}
        for column in columns:
            power = _power(fam, column, opts, conf, b, seed, rows["power"], fk, note)
            power_of[(fam.key, column.id)] = power
            mark = NO_POWER if power and power != rk.CONTROLS_CORRECT else ""
            scores: dict[str, pd.Series] = {}
            empty: list[str] = []
            for m in fam.methods:
                v = fam.values(m, column)
                if v is None or not len(v):
                    empty.append(m.label)
                else:
                    scores[m.label] = v
            if empty and scores:
                note(column.id, f"{len(empty)} method(s) with no finite value left out of the ranking: "
                     + ", ".join(empty))
            if not scores:
                continue
            matrix = _aligned(scores)
            kept, mask = st.finite_rows(matrix.to_numpy())
            if kept.shape[0] == 0:
                note(column.id, "no image has a finite value for every method: not ranked")
                continue
            common = matrix.index[mask]
            try:
                res = rk.rank_methods(matrix, higher_is_better=column.higher_is_better, n_resamples=b, seed=seed,
                                      confidence=conf)
            except ValueError as exc:
                note(column.id, f"not ranked: {exc}")
                continue
            by_label = {m.label: m for m in fam.members}
            for j, label in enumerate(res.methods):
                m = by_label[label]
                flags = "; ".join(x for x in (mark, flag_text(m)) if x)
                rows["ranks"].append({**fk, "metric": column.id, **m.ident(), "mean": res.mean[j],
                                      "rank": res.rank[j], "rank_low": res.rank_low[j], "rank_high": res.rank_high[j],
                                      "p_best": res.p_best[j], "n": res.n, "n_dropped": res.n_dropped,
                                      "power": power, "flags": flags})
            for m in fam.members:
                if not is_control(m.role):
                    continue
                v = fam.values(m, column)
                on = v.reindex(common).dropna() if v is not None else pd.Series(dtype=float)
                rows["ranks"].append({**fk, "metric": column.id, **m.ident(),
                                      "mean": float(on.mean()) if len(on) else math.nan, "rank": math.nan,
                                      "rank_low": math.nan, "rank_high": math.nan, "p_best": math.nan,
                                      "n": int(len(on)), "n_dropped": int(len(common) - len(on)), "power": power,
                                      "flags": "; ".join(x for x in ("reference row, not ranked", flag_text(m)) if x)})
            method_means[column.id] = dict(zip(res.methods, res.mean, strict=True))
            method_scores[column.id] = matrix
            if len(res.methods) >= 2:
                try:
                    agree = rk.rank_alpha(matrix, higher_is_better=column.higher_is_better)
                    rows["alpha"].append({**fk, "metric": column.id, "alpha": agree.alpha, "n": agree.n,
                                          "n_dropped": agree.n_dropped, "n_methods": len(agree.methods)})
                except (ValueError, ImportError) as exc:
                    note(column.id, f"Krippendorff's alpha not computed: {exc}")
            if column.id == primary:
                _normalised(fam, column, opts, conf, b, seed, rows["normalised"], fk, flag_text)
        # agreement between metrics (methods only)
        if len(method_means) >= 2:
            means = pd.DataFrame({k: pd.Series(v) for k, v in method_means.items()})
            orient = {c.id: c.higher_is_better for c in columns if c.id in method_means}
            tau = rk.kendall_matrix(means, orient)
            ids = list(tau.columns)
            for i, a in enumerate(ids):
                for bb in ids[i + 1:]:
                    both = means[[a, bb]].dropna()
                    rows["kendall"].append({**fk, "metric_a": a, "metric_b": bb, "tau": float(tau.loc[a, bb]),
                                            "n_methods": int(len(both))})
        # the aggregate rank
        chosen = [c for c in columns if c.id in method_scores and
                  any(sel in (c.id, c.name, c.family) for sel in opts.aggregate)]
        if chosen:
            _aggregate(fam, chosen, method_scores, conf, b, seed, rows["aggregate"], fk, note, flag_text,
                       aggregate_metrics)
        # per class, every metric and explainer
        _per_class(fam, columns, conf, b, seed, rows["per_class"], fk)
    cross = _cross_model(plain, columns, conf, b, seed) if families else []
    return Analysis(
        group_columns=group_cols,
        ranks=_frame(rows["ranks"], group_cols, _RANK_COLS),
        comparisons=comparisons,
        power=_frame(rows["power"], group_cols, _POWER_COLS),
        normalised=_frame(rows["normalised"], group_cols, _NORM_COLS),
        sanity=_frame(rows["sanity"], group_cols, _SANITY_COLS),
        kendall=_frame(rows["kendall"], group_cols, _KENDALL_COLS),
        alpha=_frame(rows["alpha"], group_cols, _ALPHA_COLS),
        aggregate=_frame(rows["aggregate"], group_cols, _AGG_COLS),
        per_class=_frame(rows["per_class"], group_cols, _CLASS_COLS),
        cross_model=_frame(cross, [], _CROSS_COLS),
        notes=_frame(rows["notes"], group_cols, _NOTE_COLS),
        options=opts, row_flags=row_flags, metric_power=power_of, aggregate_metrics=aggregate_metrics,
        primary=primary, confidence=float(conf), n_resamples=int(b),
    )


def _difference(d: rk.Difference | None, prefix: str) -> dict[str, float]:
    if d is None:
        return {prefix: math.nan, f"{prefix}_ci_low": math.nan, f"{prefix}_ci_high": math.nan}
    return {prefix: d.diff, f"{prefix}_ci_low": d.ci_low, f"{prefix}_ci_high": d.ci_high}


def _power(fam: _Family, column: MetricColumn, opts: StatisticsOptions, conf: float, b: int, seed: int,
           out: list[dict[str, Any]], fk: Mapping[str, str], note: Any) -> str:
    """Append the control-power rows of one metric in one family; return its verdict ("" = not measured)."""
    if column.family not in opts.power_families:
        return NOT_MEASURED
    nulls = fam.nulls()
    positives = fam.by_role(POSITIVE_ROLE)
    negatives = fam.by_role(NEGATIVE_ROLE)
    if not nulls or not (positives or negatives):
        return NOT_MEASURED
    by_label = {m.label: m for m in fam.members}
    pairs = pair_controls([(m.label, m.row.get("_explainer_params") or {}) for m in positives],
                          [(m.label, m.row.get("_explainer_params") or {}) for m in negatives])
    verdicts = []
    for null in nulls:
        null_v = fam.values(null, column)
        if null_v is None or not len(null_v):
            continue
        for p, n in pairs:
            pos_v = fam.values(by_label[p], column) if p else None
            neg_v = fam.values(by_label[n], column) if n else None
            if (p and (pos_v is None or not len(pos_v))) or (n and (neg_v is None or not len(neg_v))):
                continue
            cols = {"null": null_v, **({"positive": pos_v} if p else {}), **({"negative": neg_v} if n else {})}
            aligned = _aligned(cols)
            try:
                res = rk.control_power(aligned["null"], oracle=aligned["positive"] if p else None,
                                       anti=aligned["negative"] if n else None,
                                       higher_is_better=column.higher_is_better, confidence=conf,
                                       n_resamples=b, seed=seed)
            except ValueError as exc:
                note(column.id, f"power not measured ({', '.join(x for x in (p, null.label, n) if x)}): {exc}")
                continue
            verdicts.append(res.verdict)
            where = []
            for label in (p, null.label, n):
                if label:
                    m = by_label[label]
                    text = _params_text(m.row.get("_explainer_params") or {})
                    where.append(f"{label} ({m.role}{', ' + text if text else ''})")
            measured = (f"{' vs '.join(where)} on {res.n} image(s) of {fk.get('dataset', '')} / {fk.get('model', '')}"
                        + (f", {res.n_dropped} left out (no finite value for every control)" if res.n_dropped else ""))
            out.append({**fk, "metric": column.id, "positive_control": p or "", "null_control": null.label,
                        "negative_control": n or "", **_difference(res.oracle_minus_random, "positive_minus_null"),
                        **_difference(res.random_minus_anti, "null_minus_negative"), "verdict": res.verdict,
                        "n": res.n, "n_dropped": res.n_dropped, "measured_on": measured})
    if not verdicts:
        return NOT_MEASURED
    if all(v == rk.CONTROLS_CORRECT for v in verdicts):
        return rk.CONTROLS_CORRECT
    return rk.CONTROLS_BACKWARDS if rk.CONTROLS_BACKWARDS in verdicts else rk.CONTROLS_UNSEPARATED


def _normalised(fam: _Family, column: MetricColumn, opts: StatisticsOptions, conf: float, b: int, seed: int,
                out: list[dict[str, Any]], fk: Mapping[str, str], flag_text: Any) -> None:
    nulls = fam.nulls()
    positives = fam.by_role(POSITIVE_ROLE)
    if not nulls or not positives:
        return
    null = nulls[0]
    null_v = fam.values(null, column)
    if null_v is None or not len(null_v):
        return
    for pos in positives:
        pos_v = fam.values(pos, column)
        if pos_v is None or not len(pos_v):
            continue
        for m in fam.members:
            if m.label in (null.label, pos.label):
                continue
            v = fam.values(m, column)
            if v is None or not len(v):
                continue
            aligned = _aligned({"m": v, "null": null_v, "pos": pos_v})
            try:
                res = rk.normalised_scores(aligned[["m"]], random=aligned["null"].to_numpy(),
                                           oracle=aligned["pos"].to_numpy(), confidence=conf, n_resamples=b, seed=seed)
            except ValueError:
                continue
            r = res.iloc[0]
            out.append({**fk, "metric": column.id, **{k: v for k, v in m.ident().items() if k != "cell_id"},
                        "positive_control": pos.label, "null_control": null.label, "normalised": r["normalised"],
                        "normalised_ci_low": r["ci_low"], "normalised_ci_high": r["ci_high"], "n": int(r["n"]),
                        "n_dropped": int(r["n_dropped"]), "flags": flag_text(m)})


def _aggregate(fam: _Family, chosen: Sequence[MetricColumn], scores: Mapping[str, pd.DataFrame], conf: float,
               b: int, seed: int, out: list[dict[str, Any]], fk: Mapping[str, str], note: Any, flag_text: Any,
               used: dict[tuple[str, ...], list[str]]) -> None:
    methods = None
    for c in chosen:
        cols = set(scores[c.id].columns)
        methods = cols if methods is None else methods & cols
    order = [m.label for m in fam.methods if methods and m.label in methods]
    if len(order) < 2:
        note("aggregate", "fewer than two methods scored by every selected metric: no aggregate rank")
        return
    index = sorted(set().union(*(scores[c.id].index for c in chosen)))
    blocks = {c.id: scores[c.id].reindex(index)[order] for c in chosen}
    try:
        res = rk.aggregate_ranks(blocks, higher_is_better={c.id: c.higher_is_better for c in chosen},
                                 n_resamples=b, seed=seed, confidence=conf)
    except ValueError as exc:
        note("aggregate", f"no aggregate rank: {exc}")
        return
    used[fam.key] = list(res.metrics)
    by_label = {m.label: m for m in fam.members}
    for j in sorted(range(len(res.methods)), key=lambda j: (res.mean_rank[j], j)):
        label = res.methods[j]
        m = by_label[label]
        out.append({**fk, **{k: v for k, v in m.ident().items() if k != "role"}, "mean_rank": res.mean_rank[j],
                    "mean_rank_low": res.rank_low[j], "mean_rank_high": res.rank_high[j], "n": res.n,
                    "n_dropped": res.n_dropped, "metrics": ", ".join(res.metrics), "flags": flag_text(m)})


def _per_class(fam: _Family, columns: Sequence[MetricColumn], conf: float, b: int, seed: int,
               out: list[dict[str, Any]], fk: Mapping[str, str]) -> None:
    pending: list[tuple[dict[str, Any], np.ndarray]] = []
    for column in columns:
        for m in fam.members:
            frame = fam.frame(m, column)
            if frame is None or "label" not in frame:
                continue
            names = class_names_of(m.row, fam.manifests)
            v = frame["value"].to_numpy(np.float64)
            labels = frame["label"].to_numpy()
            keep = np.isfinite(v)
            present = set(labels.tolist())
            for c in sorted(present | set(range(len(names)))):
                name = names[c] if 0 <= c < len(names) else str(c)
                sel = v[keep & (labels == c)]
                base = {**fk, "metric": column.id, **{k: x for k, x in m.ident().items() if k != "cell_id"},
                        "class": name, "n": int(sel.size)}
                pending.append((base, sel))
    cis = batched_cis([s for _, s in pending], confidence=conf, n_resamples=b, seed=seed)
    for (base, sel), (lo, hi) in zip(pending, cis, strict=True):
        out.append({**base, "mean": float(sel.mean()) if sel.size else math.nan, "ci_low": lo, "ci_high": hi})


def _cross_model(df: pd.DataFrame, columns: Sequence[MetricColumn], conf: float, b: int, seed: int) -> list[dict[str, Any]]:
    """Per dataset and perturbation with two or more models: every row on the common image set."""
    out: list[dict[str, Any]] = []
    keys = [c for c in ("dataset", "perturbation") if c in df.columns]
    model_cols = [c for c in ("model", "weights", "settings") if c in df.columns]
    if not keys or not model_cols or not columns:
        return out
    pending: list[tuple[dict[str, Any], np.ndarray]] = []
    for key, part in df.groupby(keys, sort=False, dropna=False):
        kd = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        models = list(part.groupby(model_cols, sort=False, dropna=False))
        if len(models) < 2:
            continue
        explained: list[set[str]] = []
        frames: dict[tuple[int, str], pd.DataFrame | None] = {}
        for mi, (_, rows) in enumerate(models):
            ids: set[str] = set()
            for i, (_, row) in enumerate(rows.iterrows()):
                for column in columns:
                    f = per_image_frame(row, column)
                    frames[(mi, f"{i}:{column.id}")] = f
                    if f is not None:
                        ids |= set(f.index)
            explained.append(ids)
        common = sorted(set.intersection(*explained)) if explained else []
        for mi, (mkey, rows) in enumerate(models):
            md = dict(zip(model_cols, mkey if isinstance(mkey, tuple) else (mkey,), strict=True))
            for i, (_, row) in enumerate(rows.iterrows()):
                role = row.get("role") if isinstance(row.get("role"), str) and row.get("role") else METHOD_ROLE
                for column in columns:
                    f = frames.get((mi, f"{i}:{column.id}"))
                    v = f["value"].reindex(common).to_numpy(np.float64) if f is not None else np.array([])
                    v = v[np.isfinite(v)]
                    base = {**kd, "metric": column.id, "explainer": str(row["explainer"]),
                            "explainer_params": str(row.get("explainer_params", "")), "role": role,
                            **{c: str(md.get(c, "")) for c in ("model", "weights", "settings")},
                            "n": int(v.size), "n_common": len(common)}
                    pending.append((base, v))
    cis = batched_cis([v for _, v in pending], confidence=conf, n_resamples=b, seed=seed)
    for (base, v), (lo, hi) in zip(pending, cis, strict=True):
        out.append({**base, "mean": float(v.mean()) if v.size else math.nan, "ci_low": lo, "ci_high": hi})
    return out


def compact_table(frame: pd.DataFrame, drop: Sequence[str] = ()) -> dict[str, Any]:
    """A frame as ``{"columns": [...], "data": [[...], ...]}`` (JSON-ready values: NaN -> None)."""
    cols = [c for c in frame.columns if c not in set(drop)]
    data = []
    for rec in frame[cols].itertuples(index=False, name=None):
        data.append([_json_value(v) for v in rec])
    return {"columns": [str(c) for c in cols], "data": data}


def _json_value(v: Any) -> Any:
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    try:
        json.dumps(v)
    except TypeError:
        return str(v)
    return v


def safe_analyse(df: pd.DataFrame, options: StatisticsOptions | None = None, **kw: Any) -> Analysis:
    """:func:`analyse`, or (with a warning) empty tables when it fails: the statistics must never
    cost the leaderboard itself."""
    try:
        return analyse(df, options, **kw)
    except Exception as exc:  # noqa: BLE001 - reported, the leaderboard goes on
        warnings.warn(f"leaderboard statistics skipped: {type(exc).__name__}: {exc}", stacklevel=2)
        kept = kw.get("comparisons")
        empty = analyse(df.iloc[0:0], options, comparisons=pd.DataFrame(columns=list(COMPARISON_COLUMNS)))
        if isinstance(kept, pd.DataFrame):
            empty.comparisons = kept
        return empty
