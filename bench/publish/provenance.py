"""Where a leaderboard's numbers come from, and what its fingerprints stand for.

:func:`provenance` gathers, from a :func:`bench.publish.collect.collect` frame and its runs'
manifests, the runs (versions, seeds, plugins), grids, perturbation parameters, the metric
columns, the gain references and controls, and the legends of the settings and
explainer-parameter fingerprints; :func:`provenance_lines` turns that into the plain-text
footer every format shows (each renderer escapes it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from bench.pipeline.controls import is_control
from bench.publish.collect import (
    MetricColumn,
    ambiguous_explainers,
    ci_label,
    constant_counts,
    primary_column,
    shown_metric_columns,
)


def provenance(df: pd.DataFrame, manifests: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Where the numbers come from: runs, versions, seeds, grids, perturbation parameters."""
    manifests = manifests if manifests is not None else df.attrs.get("manifests", {})
    run_ids = sorted({str(r) for r in df["run_id"]}) if not df.empty else []
    runs = []
    for rid in run_ids:
        m = manifests.get(rid, {})
        env = m.get("environment") or {}
        runs.append(
            {
                "run_id": rid,
                "created": m.get("created"),
                "finished": m.get("finished"),
                "bench_version": m.get("bench_version"),
                "tensorflow": env.get("tensorflow"),
                "keras": env.get("keras"),
                "python": env.get("python"),
                "numpy": env.get("numpy"),
                "git_commit": env.get("git_commit"),
                "seeds": m.get("seeds") or {},
                "dataset_fingerprint": (m.get("dataset") or {}).get("fingerprint"),
                "plugins": [
                    {k: p.get(k) for k in ("name", "distribution", "version")}
                    for p in (m.get("plugins") or [])
                    if isinstance(p, Mapping)
                ],
            }
        )
    perturbations: dict[str, list[dict[str, Any]]] = {}
    if "_pert_params" in df.columns:
        for name, params in zip(df["perturbation"], df["_pert_params"], strict=True):
            lst = perturbations.setdefault(str(name), [])
            if params not in lst:
                lst.append(params)
    from bench import __version__

    def uniq(col: str) -> list[Any]:
        if col not in df.columns or df.empty:
            return []
        vals = {v for v in df[col].tolist() if v is not None and v == v and v != ""}
        return sorted(vals, key=lambda v: (str(type(v)), v))

    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "generator": f"bench {__version__}",
        "metrics": [c.to_dict() for c in shown_metric_columns(df)],
        "primary": df.attrs.get("primary", ""),
        "primary_label": (lambda c: c.label if c is not None else "")(primary_column(df)),
        "primary_header": (lambda c: c.header if c is not None else "")(primary_column(df)),
        "baseline": df.attrs.get("baseline", ""),
        # the explainers gains are measured against, and every control with its role
        "gain_references": sorted({str(n) for n in df["baseline"] if isinstance(n, str) and n})
        if "baseline" in df.columns else [],
        "controls": sorted({f"{e} ({r})" for e, r in zip(df["explainer"], df["role"], strict=True)
                            if is_control(r)}) if "role" in df.columns else [],
        "ci_label": ci_label(df),
        "run_ids": run_ids,
        "runs": runs,
        "grids": uniq("grid"),
        "seeds": uniq("seed"),
        "sigmas": uniq("sigma"),
        "perturbation_params": perturbations,
        "settings": settings_legend(df),
        "settings_blocks": settings_blocks(df),
        "explainer_params": explainer_params_legend(df),
        "explainer_params_shown": sorted(ambiguous_explainers(df)),
        "constant_heatmap_rows": int(sum(1 for v in constant_counts(df) if v)),
        "budgets": budget_lines(df),
    }


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, Mapping | list) else str(value)


def _non_defaults(kind: str, name: str, params: Mapping[str, Any] | None) -> list[str]:
    """``"steps 8 (default 32)"`` for each documented parameter of the registered ``kind``
    ``name`` (:attr:`bench.plugin.specs.ComponentSpec.parameters`) whose value differs from its
    default; [] for a component that is not registered here or documents no defaults."""
    from bench.plugin.registry import registry

    try:
        defaults = dict(registry().get(kind, name).spec.parameters or {})
    except Exception:  # noqa: BLE001 - a record of a component this install lacks: nothing to compare
        return []
    given = dict(params or {})
    return [f"{k} {_short(given[k])} (default {_short(v)})" for k, v in defaults.items()
            if k in given and given[k] != v]


def budget_lines(df: pd.DataFrame) -> list[str]:
    """Where the rows ran a component with parameters other than its documented defaults (a
    preset's cheaper budgets: fewer RISE masks, Score-CAM channels, randomisation blocks),
    one line per explainer or metric, so a reader knows which numbers are not the papers'."""
    if df.empty:
        return []
    lines: list[str] = []
    if "_explainer_params" in df.columns:
        seen: set[str] = set()
        for name, params in zip(df["explainer"], df["_explainer_params"], strict=True):
            changed = _non_defaults("explainer", str(name), params if isinstance(params, Mapping) else {})
            line = f"explainer {name}: {', '.join(changed)}" if changed else ""
            if line and line not in seen:
                seen.add(line)
                lines.append(line)
    for col in shown_metric_columns(df):
        changed = _non_defaults("metric", col.name, col.params)
        if changed:
            lines.append(f"metric {col.name}: {', '.join(changed)}")
    return lines


_HASH_FIELDS = ("fingerprint", "md5", "sha256")


def _setting_text(label: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ("x" if label == "grid" else ",").join(_setting_text("", v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    text = str(value)
    if label.rsplit(".", 1)[-1] in _HASH_FIELDS and len(text) > 10:
        return text[:10]
    return text


def settings_summary(settings: Mapping[str, Any]) -> dict[str, str]:
    """A settings block as ``{label: text}`` for the legend: the AOPC settings and the seed
    first, then the perturbation, dataset, model and training parameters (dotted labels),
    hashes shortened to 10 characters, unset values left out."""
    out: dict[str, str] = {}

    def walk(label: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k in sorted(value, key=str):
                walk(f"{label}.{k}" if label else str(k), value[k])
        elif value is not None and not (isinstance(value, Mapping) and not value):
            out[label] = _setting_text(label, value)

    aopc = settings.get("aopc") if isinstance(settings.get("aopc"), Mapping) else {}
    for k in ("grid", "orders", "max_images", "seed", "bootstrap", "confidence"):
        value = settings.get("seed") if k == "seed" else aopc.get(k)
        if value is not None:
            out[k] = _setting_text(k, value)
    for k, v in aopc.items():
        if k not in out and v is not None:
            out[str(k)] = _setting_text(str(k), v)
    for section in ("perturbation", "dataset", "model", "training"):
        block = settings.get(section)
        if isinstance(block, Mapping):
            # {"params": {...}} nests one level deeper than the reader needs
            flat = {**{k: v for k, v in block.items() if k != "params"}, **dict(block.get("params") or {})}
            walk(section, flat)
    for k, v in settings.items():
        if k not in ("version", "aopc", "seed", "perturbation", "dataset", "model", "training"):
            walk(str(k), v)
    return out


def settings_blocks(df: pd.DataFrame) -> dict[str, Any]:
    """``{settings fingerprint (as shown): settings block}`` of the rows of ``df``."""
    if "_settings" not in df.columns or df.empty:
        return {}
    out: dict[str, Any] = {}
    for key, block in zip(df["settings"], df["_settings"], strict=True):
        out.setdefault(str(key), block)
    return dict(sorted(out.items()))


def settings_legend(df: pd.DataFrame) -> dict[str, dict[str, str]]:
    """``{settings fingerprint: settings_summary(block)}`` of the rows of ``df``."""
    return {k: settings_summary(v) for k, v in settings_blocks(df).items() if isinstance(v, Mapping)}


def explainer_params_legend(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``{explainer params fingerprint: {"explainers": [...], "params": {...}}}`` of the rows of ``df``."""
    if "explainer_params" not in df.columns or df.empty:
        return {}
    params_col = df["_explainer_params"] if "_explainer_params" in df.columns else [{}] * len(df)
    out: dict[str, dict[str, Any]] = {}
    for key, name, params in zip(df["explainer_params"], df["explainer"], params_col, strict=True):
        entry = out.setdefault(str(key), {"explainers": [], "params": dict(params or {})})
        if str(name) not in entry["explainers"]:
            entry["explainers"].append(str(name))
    return dict(sorted(out.items()))


def settings_legend_lines(prov: Mapping[str, Any]) -> list[str]:
    """The legend of the settings fingerprints: what every row shares, then what each stands for."""
    legend: Mapping[str, Mapping[str, str]] = prov.get("settings") or {}
    if not legend:
        return []

    def text(fields: Mapping[str, str]) -> str:
        return "; ".join(f"{k}={v}" for k, v in fields.items()) or "(no settings recorded)"

    lines = ["Settings: a row's settings fingerprint stands for every shared input that can change "
             "its numbers; rows are paired, and gains computed, only within one fingerprint."]
    if len(legend) == 1:
        (key, fields), = legend.items()
        return [*lines, f"Settings {key} (every row): {text(fields)}"]
    labels: list[str] = []
    for fields in legend.values():
        labels += [k for k in fields if k not in labels]
    first = next(iter(legend.values()))
    common = {k: first[k] for k in labels
              if k in first and all(f.get(k) == first[k] for f in legend.values())}
    if common:
        lines.append(f"Settings shared by every fingerprint: {text(common)}")
    for key, fields in legend.items():
        diff = {k: fields.get(k, "-") for k in labels if k not in common}
        lines.append(f"Settings {key}: {text(diff)}")
    return lines


def provenance_lines(prov: Mapping[str, Any]) -> list[str]:
    """Plain-text footer lines (unescaped: each renderer escapes them)."""
    lines = []
    head = prov.get("primary_label") or "the primary metric"
    base = prov.get("baseline")
    if base:
        lines.append(f"Gain over {base} = {head} - {head} of the '{base}' explainer (the control), same dataset, "
                     "model, weights, perturbation and settings fingerprint; with a CI it is the paired "
                     "mean difference on the images both cells scored (bootstrap CI).")
    elif prov.get("gain_references"):
        lines.append(f"Gain over control = {head} - {head} of the family's null-control explainer ("
                     + ", ".join(prov["gain_references"]) + "), same dataset, model, weights, perturbation and "
                     "settings fingerprint; with a CI it is the paired mean difference on the images both "
                     "cells scored (bootstrap CI).")
    if prov.get("controls"):
        lines.append("Controls (" + ", ".join(prov["controls"]) + ") are reference lines, listed "
                     "after the methods, not ranked among them.")
    lines += settings_legend_lines(prov)
    shown = set(prov.get("explainer_params_shown") or [])
    for key, entry in (prov.get("explainer_params") or {}).items():
        names = [n for n in entry.get("explainers", []) if n in shown]
        if names:
            lines.append(f"Explainer params {key} ({', '.join(names)}): "
                         + (json.dumps(entry["params"], sort_keys=True, default=str) if entry.get("params")
                            else "defaults"))
    if prov.get("constant_heatmap_rows"):
        lines.append(f"Flag 'n/N constant heatmaps' ({prov['constant_heatmap_rows']} row(s)): n of the row's "
                     "N explained images got an all-equal heatmap, so their region order is arbitrary (the "
                     "seeded tie-break permutation) and their curve metrics measure that order, not the "
                     "explainer.")
    lines += metric_lines(prov)
    lines.append(
        "Grid: " + (", ".join(str(g) for g in prov.get("grids", [])) or "n/a")
        + "; seeds: " + (", ".join(str(s) for s in prov.get("seeds", [])) or "n/a")
        + "; sigma: " + (", ".join(f"{s:g}" for s in prov.get("sigmas", [])) or "n/a")
    )
    for name, plist in (prov.get("perturbation_params") or {}).items():
        for p in plist:
            lines.append(f"Perturbation {name}: " + (json.dumps(p, sort_keys=True, default=str) if p else "defaults"))
    for run in prov.get("runs", []):
        lines.append(
            f"Run {run['run_id']}: bench {run.get('bench_version') or '?'}, "
            f"TensorFlow {run.get('tensorflow') or '?'}, Keras {run.get('keras') or '?'}, "
            f"Python {run.get('python') or '?'}, git {run.get('git_commit') or '?'}, "
            f"seeds {json.dumps(run.get('seeds') or {}, sort_keys=True)}, "
            f"finished {run.get('finished') or '?'}"
        )
    lines.append(f"Generated {prov.get('generated')} by {prov.get('generator')}.")
    return lines


def metric_lines(prov: Mapping[str, Any]) -> list[str]:
    """One line per metric column: its header (direction), family, parameters and definition."""
    columns = [MetricColumn(**c) for c in prov.get("metrics") or []]
    if not columns:
        return []
    ci = prov.get("ci_label", "95%")
    lines = [f"Metrics: each value is the mean over the explained (correctly classified) test images of "
             f"the metric's per-image value, with its {ci} bootstrap CI; non-finite per-image values are "
             "left out (counted in metric_notes); ↑ higher is better, ↓ lower is better; rows are ranked by "
             f"{prov.get('primary_header') or 'the first metric'}."]
    for c in columns:
        params = f"; params {json.dumps(dict(c.params), sort_keys=True, default=str)}" if c.params else ""
        lines.append(f"{c.header} ({c.id}, {c.family}{params}): {c.description or 'no description'}")
    return lines


