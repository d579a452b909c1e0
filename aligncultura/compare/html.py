"""``report.html``: one self-contained page of a comparison or of one benchmark run.

Inline CSS and JS only, plots embedded as base64 PNG data URIs, the page's data inline as JSON
(``<script type="application/json" id="report-data">``): it opens from disk with no server and no
network, and references no URL. Every text that comes from data is HTML-escaped (prompts and
responses may hold markup). Numbers carry machine-readable hooks: ``data-metric``, ``data-model``,
``data-field`` (and ``data-domain`` in the per-domain table) on the element holding the number as
displayed, so a test can compare the page with metrics.json / comparison.json.

The sample of responses is filtered by model, domain and verdict (cultural failure outcome) with
``<select>`` elements; the filters are also read from the URL's fragment
(``report.html#domain=Music&verdict=fail``) so that a link, or a headless browser, opens the page
filtered. The data comes from ``report_data.py``; jobs/compare.py and jobs/benchmark.py call
``write_html`` (jobs/benchmark.py through ``benchmark_report``).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from aligncultura.compare.report_data import OUTCOMES, domain_order

PLOT_TITLES = {"metrics": "Metrics per model", "pairwise": "Pairwise differences",
               "failures": "Cultural failure rate by domain and subdomain",
               "efficiency": "Generation efficiency"}
FILTERS = ("model", "domain", "verdict")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1400px;
padding:0 1.2em 3em;color:#1d1d1f}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #d6d6d6;padding:3px 7px;
vertical-align:top}th{background:#f2f2f2;position:sticky;top:0}td.num{text-align:right;
white-space:nowrap}.ci{color:#666;font-size:.9em}.note{color:#8a4b00}.muted{color:#777}
img{max-width:100%;border:1px solid #eee}nav a{margin-right:1em}
.clip{max-height:9em;overflow:auto;white-space:pre-wrap;min-width:16em;max-width:34em}
tr.fail td.outcome{background:#fde2e1}tr.pass td.outcome{background:#e3f5e1}
tr.undecided td.outcome{background:#fff4d6}tr[hidden]{display:none}
.filters label{margin-right:1.2em}
"""

JS = """
(function () {
  "use strict";
  var keys = ["model", "domain", "verdict"];
  var rows = Array.prototype.slice.call(document.querySelectorAll("#sample-table tbody tr"));
  function sel(k) { return document.getElementById("filter-" + k); }
  function apply() {
    var shown = 0;
    rows.forEach(function (tr) {
      var ok = keys.every(function (k) {
        var s = sel(k);
        return !s || s.value === "" || tr.getAttribute("data-" + k) === s.value;
      });
      tr.hidden = !ok;
      if (ok) { shown += 1; }
    });
    document.getElementById("sample-shown").textContent = String(shown);
  }
  function fromHash() {
    var p = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    keys.forEach(function (k) {
      var s = sel(k);
      if (s && p.has(k)) {
        var v = p.get(k);
        var known = Array.prototype.some.call(s.options, function (o) { return o.value === v; });
        s.value = known ? v : "";
      }
    });
    apply();
  }
  keys.forEach(function (k) {
    var s = sel(k);
    if (!s) { return; }
    s.addEventListener("change", function () {
      var p = new URLSearchParams();
      keys.forEach(function (j) { var t = sel(j); if (t && t.value) { p.set(j, t.value); } });
      try { window.history.replaceState(null, "", "#" + p.toString()); } catch (e) { /* file: */ }
      apply();
    });
  });
  window.addEventListener("hashchange", fromHash);
  fromHash();
  var data = JSON.parse(document.getElementById("report-data").textContent);
  document.body.setAttribute("data-samples", String(data.samples.rows.length));
  document.body.setAttribute("data-js", "ready");
})();
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def fmt(x: Any, nd: int = 1) -> str:
    """A number as the page shows it: ``nd`` decimals, "n/a" for a missing value."""
    if x is None or isinstance(x, bool):
        return "n/a" if x is None else str(x)
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def ci_text(e: dict[str, Any] | None) -> str:
    if not e or e.get("ci_low") is None or e.get("ci_high") is None:
        return ""
    return f"[{fmt(e['ci_low'])}, {fmt(e['ci_high'])}]"


def _hook(text: str, cls: str = "", **attrs: Any) -> str:
    """A span holding one displayed number with its ``data-*`` hooks."""
    data = "".join(f' data-{k.replace("_", "-")}="{_e(v)}"' for k, v in attrs.items()
                   if v is not None)
    return f'<span class="{cls}"{data}>{_e(text)}</span>' if cls else f"<span{data}>{_e(text)}</span>"


def _table(head: list[str], rows: list[list[str]], tid: str = "", num_from: int = 1) -> str:
    """``rows`` hold HTML already escaped; columns from ``num_from`` on are right-aligned."""
    ident = f' id="{tid}"' if tid else ""
    out = [f"<table{ident}><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f'<td class="num">{c}</td>' if i >= num_from else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def _img(name: str, path: Path | None) -> str:
    if path is None or not Path(path).is_file():
        return ""
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path}: not a PNG file")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    title = PLOT_TITLES.get(name, name)
    return f'<figure><img alt="{_e(title)}" data-plot="{_e(name)}" src="{uri}"></figure>'


def _results(d: dict[str, Any]) -> str:
    metrics = d["metrics"]
    rows = []
    for label, v in d["models"].items():
        cells = [_e(label)]
        for m in metrics:
            e = v.get(m["name"]) or {}
            cells.append(_hook(fmt(e.get("value")), metric=m["name"], model=label, field="value")
                         + " " + _hook(ci_text(e), "ci", metric=m["name"], model=label,
                                       field="ci"))
        cells.append(_hook(fmt(v.get("n_prompts")), metric="n_prompts", model=label,
                           field="value"))
        rows.append(cells)
    return _table(["model", *[m["label"] for m in metrics], "prompts"], rows, "results")


def _pairwise(d: dict[str, Any]) -> str:
    if d["pairwise_note"]:
        return f"<p>{_e(d['pairwise_note'])}.</p>"
    labels = {m["name"]: m["label"] for m in d["metrics"]}
    meth = d["method"]
    rows = []
    for r in d["pairwise"]:
        pair = f"{r['a']} vs {r['b']}"
        rows.append([_e(r["a"]), _e(r["b"]), _e(labels.get(r["metric"], r["metric"])),
                     _hook(fmt(r["diff"]), metric=r["metric"], model=pair, field="diff"),
                     _hook(ci_text(r), "ci", metric=r["metric"], model=pair, field="ci"),
                     _e(fmt(r["p"], 3)), _e(fmt(r["p_holm"], 3)),
                     "yes" if r["significant"] else "no", _e(r["better"] or "-"),
                     _e(r["n_prompts"])])
    return (f"<p>A - B in points on the prompts both runs judged; paired bootstrap, Holm-Bonferroni "
            f"over {_e(meth.get('tests'))} tests, family-wise error rate {_e(meth.get('alpha'))}."
            "</p>" + _table(["A", "B", "metric", "A - B", "CI", "p", "p (Holm)", "significant",
                             "better", "prompts"], rows, "pairwise", num_from=3))


def _domains(d: dict[str, Any]) -> str:
    metrics = d["metrics"]
    names = domain_order({k for v in d["domains"].values() for k in v})
    if not names:
        return "<p class=muted>No per-domain breakdown in metrics.json.</p>"
    rows = []
    for dom in names:
        for label, by in d["domains"].items():
            v = by.get(dom)
            if not v:
                continue
            rows.append([_e(dom), _e(label),
                         _hook(fmt(v.get("n")), metric="n", model=label, domain=dom,
                               field="value"),
                         *[_hook(fmt(v.get(m["name"])), metric=m["name"], model=label,
                                 domain=dom, field="value") for m in metrics],
                         _hook(fmt(v.get("cultural_failure_undecided")), metric="undecided",
                               model=label, domain=dom, field="value")])
    return _table(["domain", "model", "prompts", *[m["label"] for m in metrics],
                   "fail undecided"], rows, "domains", num_from=2)


def _judges(d: dict[str, Any]) -> str:
    rows = []
    for label, j in d["judges"].items():
        pf, un, und, j2 = j["position_flip"], j["unscored"], j["undecided"], j.get("judge2")
        by = ", ".join(f"{c} {v[0]}/{v[1]}" for c, v in (un.get("by_criterion") or {}).items())
        gen = j.get("generation_failed") or {}
        bounds = und.get("bounds") or [None, None]
        rows.append([
            _e(label), _e(j["judge"] + (" (demo)" if j.get("demo_only") else "")),
            _hook(fmt(pf.get("flip_rate"), 2), metric="position_flip", model=label,
                  field="rate") + f' <span class="ci">({_e(pf.get("flips"))}/{_e(pf.get("pairs"))})</span>',
            _hook(fmt(un.get("rate"), 3), metric="unscored", model=label, field="rate")
            + f' <span class="ci">({_e(un.get("unscored"))}/{_e(un.get("judged"))}; {_e(by)})</span>',
            _hook(fmt(und.get("prompts")), metric="undecided", model=label, field="prompts")
            + f"/{_e(fmt(und.get('of')))} "
            + _hook(f"[{fmt(bounds[0])}, {fmt(bounds[1])}]", "ci", metric="undecided",
                    model=label, field="bounds"),
            _e(f"{gen.get('excluded')}/{gen.get('total')}" if gen else "n/a"),
            _e(j2["judge"]) if j2 else "-",
            _hook(fmt(j2["pooled"]["kappa"], 2), metric="kappa", model=label, field="pooled")
            + f' <span class="ci">(n={_e(j2["pooled"]["n"])})</span>' if j2 else "-"])
    return ("<p>Position flip: share of pairwise (helpful) judgment pairs whose verdict follows "
            "the position, not the text. Unscored: judge answers that could not be parsed (per "
            "criterion: unscored/judged). Undecided: prompts whose cultural failure is not "
            "decided (some criterion unscored), with the failure rate's bounds counting them all "
            "as passes / failures. Kappa: Cohen's kappa with the second judge (pooled).</p>"
            + _table(["model", "judge", "position flip", "unscored", "undecided prompts [bounds]",
                      "generations left out", "judge2", "kappa"], rows, "judges", num_from=2))


def _determinism(d: dict[str, Any]) -> str:
    if not d["determinism"]:
        return ""
    rows = [[_e(k), _e(v.get("sample_prompts")),
             _e(f"{v.get('responses_changed')}/{v.get('responses')}"),
             _e(f"{v.get('verdicts_changed')}/{v.get('verdicts')}")]
            for k, v in d["determinism"].items()]
    return ("<h2 id=determinism>Determinism</h2><p>A seeded sample generated and judged again "
            "with another batch composition and no cache.</p>"
            + _table(["model", "sample", "responses changed", "verdicts changed"], rows,
                     "determinism"))


def _samples(d: dict[str, Any]) -> str:
    s = d["samples"]
    rows, cols = s["rows"], s["columns"]
    values = {"model": list(dict.fromkeys(r["model"] for r in rows)),
              "domain": domain_order({r["domain"] for r in rows}),
              "verdict": [o for o in OUTCOMES if any(r["outcome"] == o for r in rows)]}
    filters = []
    for k in FILTERS:
        opts = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values[k])
        filters.append(f'<label>{k} <select id="filter-{k}" data-filter="{k}">'
                       f'<option value="">all</option>{opts}</select></label>')
    body = []
    for r in rows:
        v = r["verdicts"]
        cells = [_e(r["model"]), _e(r["domain"]) + f'<br><span class="muted">{_e(r["subdomain"])}</span>',
                 _e(f"{r['row_id']} #{r['sample_index']}"),
                 f'<div class="clip">{_e(r["prompt"])}</div>',
                 f'<div class="clip">{_e(r["response"])}</div>']
        cells += [f'<span title="{_e(v[c["key"]]["rationale"])}">{_e(v[c["key"]]["verdict"])}</span>'
                  if c["key"] in v else '<span class="muted">-</span>' for c in cols]
        outcome = r["outcome"] + (f": {', '.join(r['failed'])}" if r["failed"] else "")
        body.append(f'<tr class="{_e(r["outcome"]).replace(" ", "-")}" data-model="{_e(r["model"])}" '
                    f'data-domain="{_e(r["domain"])}" data-verdict="{_e(r["outcome"])}">'
                    + "".join(f"<td>{c}</td>" for c in cells)
                    + f'<td class="outcome">{_e(outcome)}</td></tr>')
    head = ["model", "domain", "prompt id", "prompt", "response", *[c["label"] for c in cols],
            "outcome"]
    return (f"<p>A seeded random sample (seed {_e(s['seed'])}) of <b id=sample-count>"
            f"{len(rows)}</b> of the {_e(s['total'])} responses (capped at {_e(s['cap'])}); "
            "hover a verdict for the judge's rationale. Outcome: cultural failure (fail: "
            "helpful loss in both orders, unsafe or not truthful; undecided: some criterion "
            "unscored; not judged: the generation failed).</p>"
            f'<div class="filters">{"".join(filters)} shown: <b id="sample-shown">'
            f"{len(rows)}</b></div>"
            '<table id="sample-table"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head)
            + "</tr></thead><tbody>\n" + "\n".join(body) + "</tbody></table>")


def _json_block(d: dict[str, Any]) -> str:
    """The data as JSON that cannot close its script element (<, >, & escaped as \\u00XX)."""
    text = json.dumps(d, ensure_ascii=False, allow_nan=False, sort_keys=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f'<script type="application/json" id="report-data">{text}</script>'


def render_html(d: dict[str, Any], images: dict[str, Path] | None = None) -> str:
    """The whole page of ``d`` (``report_data.from_comparison`` / ``from_run``); ``images``:
    plot name -> PNG file (missing ones are left out: the page renders without plots)."""
    images = images or {}
    runs = _table(["label", "model", "judge", "judge2", "run dir", "prompts"],
                  [[_e(r["label"]), _e(r["model"]), _e(r["judge"]), _e(r.get("judge2") or "-"),
                    f"<code>{_e(r['path'])}</code>", _e(r.get("n_prompts"))] for r in d["runs"]],
                  "runs", num_from=5)
    notes = "".join(f'<p class="note">note: {_e(n)}</p>' for n in d["notes"])
    plots_note = "" if images else ("<p class=muted>No plots: matplotlib is not installed "
                                    "(pip install matplotlib), or plots=false.</p>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(d['title'])}</title><style>{CSS}</style></head>",
        f'<body data-kind="{_e(d["kind"])}">', f"<h1>{_e(d['title'])}</h1>",
        "<nav><a href=#models>models</a><a href=#domains-h>domains</a><a href=#judge>judge "
        "reliability</a><a href=#sample>sample</a></nav>",
        runs, notes, plots_note,
        "<h2 id=models>Models</h2>", f"<p>{_e(d['ci_note'])}</p>", _results(d),
        _img("metrics", images.get("metrics")),
    ]
    if d["kind"] == "comparison":
        parts += ["<h2 id=pairwise-h>Pairwise differences (A - B)</h2>", _pairwise(d),
                  _img("pairwise", images.get("pairwise"))]
    parts += ["<h2 id=domains-h>By domain</h2><p>Each run's metrics.json <code>by_domain</code>: "
              "percent, no CI (few prompts per domain).</p>", _domains(d),
              _img("failures", images.get("failures")),
              "<h2 id=judge>Judge reliability</h2>", _judges(d), _determinism(d),
              "<h2 id=efficiency>Efficiency</h2>" if images.get("efficiency") else "",
              _img("efficiency", images.get("efficiency")),
              "<h2 id=sample>Sample of prompts, responses and verdicts</h2>", _samples(d),
              _json_block(d), f"<script>{JS}</script>", "</body></html>"]
    return "\n".join(p for p in parts if p)


def write_html(path: Path, d: dict[str, Any], images: dict[str, Path] | None = None) -> Path:
    """Render ``d`` into ``path`` (report.html)."""
    path = Path(path)
    path.write_text(render_html(d, images), encoding="utf-8")
    return path


def benchmark_report(run_dir: Path, metrics: dict[str, Any], judgments: Any, generations: Any,
                     row_class: dict[str, int], judgments2: Any = None) -> dict[str, Any]:
    """jobs.benchmark's page of its one run: ``plots/*.png`` (when matplotlib is installed) and
    ``report.html`` in ``run_dir``. Returns ``{"html": path, "plots": {name: path}}``."""
    import importlib.util

    from aligncultura.compare.report_data import from_run, run_sections
    from aligncultura.compare.runs import Run

    run_dir = Path(run_dir)
    run = Run(run_dir, str(metrics.get("model") or run_dir.name), metrics, judgments, row_class,
              generations=generations, judgments2=judgments2)
    data = from_run(run)
    images: dict[str, Path] = {}
    if importlib.util.find_spec("matplotlib") is not None:
        from aligncultura.compare import plots

        sections = run_sections(run)
        figures = {"metrics": plots.metrics_figure(data["models"], ci="bootstrap over prompts"),
                   "failures": plots.failure_heatmap(sections["failures"]),
                   "efficiency": plots.efficiency_figure(sections["efficiency"])}
        images = {name: plots.save(fig, run_dir / "plots" / f"{name}.png")
                  for name, fig in figures.items()}
    return {"html": write_html(run_dir / "report.html", data, images), "plots": images}
