"""The HTML page (:func:`bench.publish.page.render_page`), checked in the page source and in
real headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it).

The page is fed from fake run folders (:mod:`_fake_runs`) read by the real ``collect``, plus
hand-made optional tables and tiny PNGs written with matplotlib. The Chromium tests run
``chromium --headless --dump-dom`` on a copy of the page with a probe script appended: on
``load`` it measures the layout at 1400 px, checks every image, clicks headers, and writes what
it found into the DOM as JSON. Without Chromium they skip and say why.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _fake_runs import CLASS_NAMES, FakeCell, write_run

from bench.publish.collect import collect
from bench.publish.comparisons import paired_comparisons
from bench.publish.page import render_page
from bench.publish.provenance import provenance

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it): "
           "the page's layout, images and sorting are checked in a real browser only",
)
WIDTH = 1400
#: Per-image values of the "spread" metric: their means (2, 9.5, 10, 100) sort differently as text.
SPREAD = {"gradcam": 100.0, "saliency": 9.5, "occlusion": 10.0, "smoothgrad-squared": 2.0,
          "random": 5.0, "oracle": 50.0}
METHODS = ("gradcam", "saliency", "occlusion", "smoothgrad-squared")
CONTROLS = {"random": "null-control", "oracle": "positive-control"}
EXTRA_METRICS = ("alpha-metric", "beta-metric", "gamma-metric", "delta-metric", "epsilon-metric",
                 "zeta-metric", "eta-metric", "theta-metric")


def _tiny_png(path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), dpi=60)
    ax.plot(np.arange(10), np.linspace(0.9, 0.2, 10))
    ax.set_title(title)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _cells() -> list[FakeCell]:
    rng = np.random.default_rng(0)
    cells = []
    for model, names in (("tiny-cnn", (*METHODS, *CONTROLS)), ("wide-net", ("gradcam", "saliency", "random"))):
        for k, name in enumerate(names):
            aopc = 0.3 + 0.05 * k + rng.normal(0, 0.02, 8)
            extra = {m: (rng.uniform(0, 1, 8) * (j + 1), True, m.split("-")[0].capitalize())
                     for j, m in enumerate(EXTRA_METRICS)}
            extra["spread"] = (np.full(8, SPREAD[name]) + rng.normal(0, 0.01, 8), True, "Spread")
            role = CONTROLS.get(name, "method")
            cells.append(FakeCell("synthetic-cxr", model, name, per_image=aopc.tolist(),
                                  lerf_per_image=(aopc / 3).tolist(), metrics=extra,
                                  constant_heatmaps=2 if name == "occlusion" else 0,
                                  extra={"provenance": {"explainer": {"role": role}}}))
    cells.append(FakeCell("synthetic-cxr", "tiny-cnn", "rise", status="failed", error="RuntimeError: boom"))
    return cells


def _per_class(rows: pd.DataFrame) -> pd.DataFrame:
    """tiny-cnn: no image of the last class was scored; wide-net: none at all (a chance-level model)."""
    out = []
    for r in rows.to_dict("records"):
        for c, name in enumerate(CLASS_NAMES):
            n = 0 if r["model"] == "wide-net" or c == len(CLASS_NAMES) - 1 else 2
            out.append({**{k: r[k] for k in ("dataset", "model", "weights", "perturbation", "settings")},
                        "explainer": r["explainer"], "class": name, "mean": 0.4 + 0.01 * c if n else np.nan,
                        "ci_low": 0.3 if n else np.nan, "ci_high": 0.5 if n else np.nan, "n": n})
    return pd.DataFrame(out)


def _extras(rows: pd.DataFrame) -> dict[str, Any]:
    key = ["dataset", "model", "weights", "perturbation", "settings"]
    methods = rows[rows["role"] == "method"]
    ranks = methods[key + ["explainer"]].assign(metric="aopc", rank=np.arange(1, len(methods) + 1, dtype=float),
                                                rank_low=1.0, rank_high=float(len(methods)), p_best=0.25)
    power = rows[key].drop_duplicates().assign(metric="aopc", oracle_minus_random=0.06,
                                               oracle_minus_random_ci_low=0.01,
                                               oracle_minus_random_ci_high=0.11, verdict="ranks the controls correctly")
    names = ["aopc", "abpc", "spread"]
    agreement = pd.DataFrame([[1.0, 0.6, -0.2], [0.6, 1.0, 0.1], [-0.2, 0.1, 1.0]], index=names, columns=names)
    return {"ranks": ranks, "metric_power": power, "agreement": agreement}


def _tiny_webp(path: Path, title: str) -> Path:
    """A lossy WebP figure, as the heatmap overlays are written."""
    from PIL import Image

    png = _tiny_png(path.with_suffix(".png.tmp"), title)
    with Image.open(png) as im:
        im.convert("RGB").save(path, format="WEBP", quality=70)
    png.unlink()
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> dict[str, Any]:
    """The rendered page and what it was made from."""
    folder = tmp_path_factory.mktemp("page")
    write_run(folder, "run-1", _cells())
    rows = collect(folder)
    prov = provenance(rows)
    metric_ids = [c["id"] for c in rows.attrs["metrics"]]
    comparisons = paired_comparisons(rows, confidence=0.95, n_resamples=200, metrics=metric_ids)
    curves = _tiny_png(folder / "curves.png", "curves")
    overlays = _tiny_png(folder / "overlays.png", "overlays")
    photo = _tiny_webp(folder / "overlays__model.webp", "overlays of a model")
    figures = {"Mean MoRF curves": [curves], "Heatmap overlays": [overlays, photo], "Nothing drawn": [],
               "Lost figure": [folder / "missing.png"]}
    text = render_page(rows, prov, rows.attrs["failed"], comparisons, figures, per_class=_per_class(rows),
                       notes=["The demo preset ran cheaper parameters."], **_extras(rows))
    path = folder / "leaderboard.html"
    path.write_text(text, encoding="utf-8")
    return {"folder": folder, "rows": rows, "html": text, "path": path, "n_images": 3}


# ---------------------------------------------------------------------------------------
# the page source
# ---------------------------------------------------------------------------------------
def test_self_contained_images_inlined(page):
    text = page["html"]
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    urls = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert urls and all(u.startswith(("data:", "#")) for u in urls), [u[:40] for u in urls if not
                                                                      u.startswith(("data:", "#"))]
    images = re.findall(r'<img alt="([^"]+)" src="data:image/(png|webp);base64,([^"]+)"( width="\d+" height="\d+")',
                        text)
    assert len(images) == page["n_images"]
    assert [mime for _, mime, _, _ in images].count("webp") == 1  # the WebP overlay, with its size
    assert all(base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n" if mime == "png" else
               base64.b64decode(b64)[8:12] == b"WEBP" for _, mime, b64, _ in images)
    assert all(alt.strip() for alt, *_ in images)
    assert "Nothing drawn" not in text  # an empty figure list leaves the figure out
    assert "Lost figure" in text and "no figure file missing.png was written" in text


def test_one_section_per_group_controls_pinned_not_ranked(page):
    text = page["html"]
    sections = re.findall(r'<section id="(group-\d+)"', text)
    assert len(sections) == page["rows"].groupby(["dataset", "model", "weights", "perturbation",
                                                  "settings"]).ngroups == 2
    first = text[text.index('<section id="group-1"'):text.index('<section id="group-2"')]
    table = first[first.index('class="sortable leaderboard"'):]
    table = table[:table.index("</table>")]
    methods = table[table.index('<tbody class="methods">'):table.index('<tbody class="controls pinned">')]
    controls = table[table.index('<tbody class="controls pinned">'):]
    for name in METHODS:
        assert f'<span class="name">{name}</span>' in methods
    for name, role in CONTROLS.items():
        assert f'<span class="name">{name}</span>' not in methods
        assert f'<span class="name">{name}</span> <span class="role">{role}</span>' in controls
    assert controls.count('<span class="ref">ref</span>') == len(CONTROLS)
    assert "not ranked" in controls
    # ranks 1..4 among the methods only
    ranks = re.findall(r'<td class="num" data-sort="([0-9.]+)">\d</td><th scope="row"', methods)
    assert sorted(float(r) for r in ranks) == [1.0, 2.0, 3.0, 4.0]


def test_numeric_cells_carry_their_numbers(page):
    rows = page["rows"]
    spread = rows[(rows["model"] == "tiny-cnn") & (rows["explainer"] == "saliency")]["spread"].iloc[0]
    assert f'data-sort="{float(spread):.7g}"' in page["html"]
    assert re.search(r'data-key="spread"[^>]*data-type="num"', page["html"])


def test_optional_tables_rendered_in_their_groups(page):
    text = page["html"]
    first = text[text.index('<section id="group-1"'):text.index('<section id="group-2"')]
    assert "Ranks with 95% intervals" in first and "Metric power from the controls" in first
    assert "ranks the controls correctly" in first
    # a value over its interval, in the fewest decimals that show the column exactly
    assert "p best" in first and '<span class="v">0.06</span><span class="ci">[0.01, 0.11]</span>' in first
    assert '<span class="v">1</span><span class="ci">[1, 6]</span>' in first
    assert "Agreement between metrics" in text and 'class="sortable matrix"' in text
    assert "Paired comparisons, AOPC" in first
    assert "The demo preset ran cheaper parameters." in text
    assert "Failed cells" in text and "RuntimeError: boom" in text


def test_empty_per_class_said_in_words_not_n0(page):
    text = page["html"]
    assert "n=0" not in text
    second = text[text.index('<section id="group-2"'):]
    assert "no correctly classified image of any class" in second
    first = text[text.index('<section id="group-1"'):text.index('<section id="group-2"')]
    assert f"no correctly classified test image of class {CLASS_NAMES[-1]}" in first
    assert "n=2" in first


def test_everything_escaped(page):
    rows = page["rows"].copy()
    rows.attrs = dict(page["rows"].attrs)
    nasty = "<b>x</b>&\"'"
    rows.loc[rows.index[0], "explainer"] = nasty
    rows.loc[rows.index[0], "metric_notes"] = "<script>alert(1)</script>"
    text = render_page(rows, {"controls": [nasty], "generator": "<i>g</i>"}, title="<t>")
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;&amp;&quot;&#x27;" in text
    assert "<script>alert" not in text and "<i>g</i>" not in text
    assert "<title>&lt;t&gt;</title>" in text


def test_plain_frame_without_attrs_and_empty_frame():
    rows = pd.DataFrame({"dataset": ["d", "d"], "model": ["m", "m"], "explainer": ["a", "b"],
                         "aopc": [0.2, 0.5], "aopc_ci_low": [0.1, 0.4], "aopc_ci_high": [0.3, 0.6]})
    text = render_page(rows)
    assert text.count('<section id="group-') == 1
    assert 'data-key="aopc"' in text and "[0.400, 0.600]" in text
    empty = render_page(rows.iloc[0:0])
    assert "No finished cells yet." in empty


# ---------------------------------------------------------------------------------------
# in Chromium
# ---------------------------------------------------------------------------------------
_ERRORS = "<script>window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message));});</script>"

_PROBE = """<script>
window.addEventListener("load", function () {
  var out = {errors: []};
  try {
    var de = document.documentElement;
    out.innerWidth = window.innerWidth; out.clientWidth = de.clientWidth; out.scrollWidth = de.scrollWidth;
    out.images = Array.prototype.map.call(document.images, function (im) {
      return {alt: im.alt, complete: im.complete, width: im.naturalWidth, shown: im.getBoundingClientRect().width};
    });
    out.wrapped = [];
    document.querySelectorAll("td.num .v, td.num .ci, .name").forEach(function (s) {
      if (s.getClientRects().length > 1) { out.wrapped.push(s.textContent); }
    });
    out.numNowrap = Array.prototype.every.call(document.querySelectorAll("td.num"), function (td) {
      return getComputedStyle(td).whiteSpace === "nowrap";
    });
    out.boxes = Array.prototype.map.call(document.querySelectorAll(".tablebox"), function (b) {
      return {overflowX: getComputedStyle(b).overflowX, scrollWidth: b.scrollWidth, clientWidth: b.clientWidth,
              right: b.getBoundingClientRect().right};
    });
    var table = document.querySelector("#group-1 table.leaderboard");
    var methods = table.querySelector("tbody.methods");
    function head(key) { return table.querySelector('thead th[data-key="' + key + '"]'); }
    function column(th, attr) {
      var i = parseInt(th.getAttribute("data-col"), 10);
      return Array.prototype.map.call(methods.rows, function (r) {
        return attr ? r.cells[i].getAttribute("data-sort") : r.cells[i].textContent.trim();
      });
    }
    function controls() {
      return Array.prototype.map.call(table.querySelector("tbody.controls").rows, function (r) {
        return r.textContent.trim();
      });
    }
    out.controlsBefore = controls();
    var spread = head("spread"), name = head("explainer");
    out.before = column(spread, true);
    spread.querySelector("button.sort").click();
    out.first = {dir: spread.getAttribute("aria-sort"), values: column(spread, true), text: column(spread, false)};
    spread.querySelector("button.sort").click();
    out.second = {dir: spread.getAttribute("aria-sort"), values: column(spread, true)};
    name.querySelector("button.sort").click();
    out.byName = {dir: name.getAttribute("aria-sort"), values: column(name, false),
                  spreadSort: spread.getAttribute("aria-sort")};
    out.controlsAfter = controls();
    out.lastBody = table.tBodies[table.tBodies.length - 1].className;
  } catch (e) { out.errors.push(String(e)); }
  out.pageErrors = window.__errors || [];
  var pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
           "--disable-extensions", "--mute-audio", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           f"--window-size={WIDTH},1000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def probed(page, tmp_path_factory) -> dict[str, Any]:
    if CHROMIUM is None:
        pytest.skip("chromium not installed")
    tmp = tmp_path_factory.mktemp("chromium")
    text = page["html"].replace("<head>", "<head>\n" + _ERRORS, 1).replace("</body>", _PROBE + "\n</body>", 1)
    probe_page = tmp / "probe.html"
    probe_page.write_text(text, encoding="utf-8")
    done = _chromium(tmp, "--virtual-time-budget=5000", "--dump-dom", probe_page.as_uri())
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium exited {done.returncode} without the probe's result; stderr tail:\n{done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@needs_chromium
def test_chromium_page_fits_1400px(probed):
    assert not probed["errors"] and not probed["pageErrors"], (probed["errors"], probed["pageErrors"])
    assert probed["innerWidth"] == WIDTH
    # no horizontal overflow of the page itself
    assert probed["scrollWidth"] <= probed["clientWidth"] <= WIDTH, probed
    # every table sits in its box, inside the page; the wide ones scroll there
    assert all(b["overflowX"] == "auto" and b["right"] <= probed["clientWidth"] for b in probed["boxes"])
    assert any(b["scrollWidth"] > b["clientWidth"] for b in probed["boxes"]), "the fixture has a wide table"
    # numbers never wrap, nor names
    assert probed["numNowrap"]
    assert probed["wrapped"] == []


@needs_chromium
def test_chromium_every_image_loads(probed, page):
    assert len(probed["images"]) == page["n_images"]
    for im in probed["images"]:
        assert im["complete"] and im["width"] > 0 and im["shown"] > 0, im
        assert im["alt"]


@needs_chromium
def test_chromium_click_sorts_numerically(probed):
    before = [float(v) for v in probed["before"]]
    first = [float(v) for v in probed["first"]["values"]]
    second = [float(v) for v in probed["second"]["values"]]
    # a higher-is-better metric sorts best first, then the other way
    assert probed["first"]["dir"] == "descending" and first == sorted(before, reverse=True)
    assert probed["second"]["dir"] == "ascending" and second == sorted(before)
    # numeric, not text: as text "9.5" > "100.0" > "10.0" > "2.0"
    shown = [t.split("[")[0].strip() for t in probed["first"]["text"]]
    assert shown != sorted(shown, reverse=True)
    assert probed["byName"]["dir"] == "ascending" and probed["byName"]["values"] == sorted(METHODS)
    assert probed["byName"]["spreadSort"] is None
    # the controls never move: reference rows below the methods
    assert probed["controlsAfter"] == probed["controlsBefore"] and len(probed["controlsAfter"]) == len(CONTROLS) + 1
    assert "controls" in probed["lastBody"]


@needs_chromium
def test_chromium_screenshot(page, tmp_path):
    from PIL import Image

    shot = tmp_path / "leaderboard-1400.png"
    done = _chromium(tmp_path, "--hide-scrollbars", f"--screenshot={shot}", page["path"].as_uri())
    assert shot.is_file(), f"chromium exited {done.returncode}; stderr tail:\n{done.stderr[-2000:]}"
    with Image.open(shot) as im:
        assert im.size == (WIDTH, 1000)
        # not a blank page
        low, high = im.convert("L").getextrema()
        assert high - low > 100
    print(f"screenshot: {shot}")


# ---------------------------------------------------------------------------------------
# the page bench leaderboard writes: the statistics of issue 14 in it
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Any]:
    """The page of a build from fake runs: controls whose AOPC is ordered, a metric whose controls
    tie (no power), a constant explainer that survives a cascading randomisation metric."""
    from bench.pipeline.store import read_json, read_npz, write_json, write_npz
    from bench.publish.analysis import FULL_RANDOMISATION_COLUMN, StatisticsOptions
    from bench.publish.leaderboard import build

    folder = tmp_path_factory.mktemp("built-page")
    base = np.linspace(0.2, 0.6, 8)
    per = {"gradcam": base + 0.3, "saliency": base + 0.1, "constant": base + 0.05, "oracle": base + 0.4,
           "random": base, "anti-oracle": base - 0.2}
    roles = {"constant": "null-control", "oracle": "positive-control", "random": "null-control",
             "anti-oracle": "negative-control"}
    cells = [FakeCell("synthetic-cxr", "tiny-cnn", name, per_image=v.tolist(),
                      metrics={"flat": ((base if name in roles else v).tolist(), True, "Flat"),
                               "cascade": ([1.0 if name == "constant" else 0.1] * 8, False, "Cascade")},
                      extra={"provenance": {"explainer": {"role": roles.get(name, "method")}}})
             for name, v in per.items()]
    run = write_run(folder, "run-1", cells)
    for path in sorted((run / "cells").glob("*.json")):  # a cascading randomisation metric, by its record
        cell = read_json(path)
        m = cell["metrics"]["cascade"]
        m.update(family="randomisation", higher_is_better=False)
        arrays = dict(read_npz(run / m["file"]))
        arrays[f"cascade/{FULL_RANDOMISATION_COLUMN}"] = np.full(8, 1.0 if cell["explainer"] == "constant" else 0.1,
                                                                 np.float32)
        write_npz(run / m["file"], **arrays)
        m["columns"][FULL_RANDOMISATION_COLUMN] = [8]
        write_json(path, cell)
    board = build(folder, control="random", formats=("html",), report=False,
                  options=StatisticsOptions(n_resamples=500))
    path = board.paths["html"]
    return {"board": board, "html": path.read_text(encoding="utf-8"), "path": path}


def test_built_page_shows_ranks_power_flags_and_agreement(built):
    text = built["html"]
    section = text[text.index('<section id="group-1"'):text.index("</section>")]
    # the main table: bootstrap ranks with their interval and P(best)
    main = section[section.index('class="sortable leaderboard"'):]
    main = main[:main.index("</table>")]
    assert 'data-key="p_best"' in main and "95% interval" in main
    assert '<span class="v">1</span><span class="ci">[1, 1]</span>' in main  # gradcam beats saliency everywhere
    # ranks, power, sanity, agreement, aggregate in the group's section
    for title in ("Ranks with 95% intervals", "Metric power from the controls", "Sanity gates",
                  "Agreement between metrics", "Kendall&#x27;s tau", "Krippendorff", "Aggregate: mean rank",
                  "never a single truth", "Normalised score"):
        assert title in section, title
    assert "ranks the controls correctly" in section and "cannot separate them" in section
    assert "Flat ↑ (no power here)" in section
    assert 'class="sortable matrix"' in section
    # the flag text, in the main table's flags and wherever the constant explainer appears
    assert section.count("survives model randomisation (Spearman 1.00 &gt;= 0.5)") >= 3
    # the comparisons say what is tested, with verdicts
    assert "p (mean)" in section and "Verdict" in section and "Wilcoxon" not in text
    assert "paired bootstrap test of the mean difference" in text
    urls = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert all(u.startswith(("data:", "#")) for u in urls)


@needs_chromium
def test_chromium_built_page_fits_and_its_images_load(built, tmp_path):
    text = built["html"].replace("<head>", "<head>\n" + _ERRORS, 1)
    probe = """<script>
window.addEventListener("load", function () {
  var de = document.documentElement, out = {};
  out.scrollWidth = de.scrollWidth; out.clientWidth = de.clientWidth;
  out.images = Array.prototype.map.call(document.images, function (im) { return im.complete && im.naturalWidth > 0; });
  out.headings = Array.prototype.map.call(document.querySelectorAll("#group-1 h4"), function (h) { return h.textContent; });
  out.errors = window.__errors || [];
  var pre = document.createElement("pre"); pre.id = "probe-result"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""
    page = tmp_path / "built.html"
    page.write_text(text.replace("</body>", probe + "\n</body>", 1), encoding="utf-8")
    done = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    out = json.loads(html.unescape(found.group(1)))
    assert not out["errors"], out["errors"]
    assert out["scrollWidth"] <= out["clientWidth"] <= WIDTH
    assert all(out["images"])
    assert any(h.startswith("Ranks with") for h in out["headings"])
    assert "Metric power from the controls" in out["headings"] and "Sanity gates" in out["headings"]
