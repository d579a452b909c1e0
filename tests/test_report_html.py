"""report.html (aligncultura/compare/html.py) opened from disk in headless Chromium (Debian's
package): it renders with its JS run, every number it shows equals metrics.json's (or
comparison.json's for what only a comparison computes), the sample filters work through the real
browser (the page reads them from the URL fragment), text from data is escaped, nothing is loaded
from a URL, and the plots reach W&B as images.

Two pages are built here without an engine: jobs.compare over two synthetic runs (the real schemas,
written by test_compare.write_run, with markup planted in prompts, responses and rationales) and
benchmark_report over one of them; the slow test reads the page of the session's real quickstart
benchmark. Locally the browser tests skip without chromium; under CI=true they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_job
from test_compare import MODELS, write_dataset, write_run

from aligncultura.benchmark.metric_list import JOINT_FIRST
from aligncultura.compare import html as report_html
from aligncultura.compare.html import benchmark_report, ci_text, fmt
from aligncultura.compare.report_data import clean
from aligncultura.compare.runs import load_run
from aligncultura.tracking import read_offline_summary

EVIL_PROMPT = '<script>document.body.dataset.pwned = "prompt"</script></script><!-- & "q"'
EVIL_RESPONSE = '</td></tr><img src=x onerror="document.body.dataset.pwned=1"> </textarea>'
EVIL_RATIONALE = '"><script>document.body.dataset.pwned = "rationale"</script>'
PLOTS = {"compare": {"metrics", "pairwise", "failures", "efficiency"},
         "benchmark": {"metrics", "failures", "efficiency"}}


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing under CI=true: .ci/run installs Debian's chromium")
        pytest.skip("chromium not installed (apt-get install --no-install-recommends chromium)")
    return path


def browse(chromium: str, page: Path, tmp: Path, fragment: str = "") -> str:
    """The DOM of ``page`` after its scripts ran (headless Chromium, its own profile dir)."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                           "--no-first-run", "--disable-extensions", "--enable-logging=stderr",
                           f"--user-data-dir={tmp / 'chromium-profile'}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]  # no JS error in the console
    return proc.stdout


class Page(HTMLParser):
    """What the tests read from a page: numbers by hook, sample rows, selects, scripts, URLs."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.hooks: dict[tuple, str] = {}
        self.rows: list[dict] = []
        self.selects: dict[str, list[str]] = {}
        self.scripts: list[str] = []
        self.urls: list[str] = []
        self.imgs: list[dict] = []
        self.body: dict = {}
        self.by_id: dict[str, str] = {}
        self._hook: tuple | None = None
        self._id: str | None = None
        self._text = ""
        self._select: str | None = None
        self._row: dict | None = None
        self._sample = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.urls += [a[k] for k in ("src", "href", "action", "poster", "srcset") if k in a]
        if tag == "body":
            self.body = a
        elif tag == "script":
            self.scripts.append(a.get("type", ""))
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "table":
            self._sample = a.get("id") == "sample-table"
        elif tag == "tr" and self._sample and "data-verdict" in a:
            self._row = {**a, "text": ""}
            self.rows.append(self._row)
        elif tag == "select":
            self._select = a["id"]
            self.selects[self._select] = []
        elif tag == "option" and self._select:
            self.selects[self._select].append(a["value"])
        if "data-metric" in a:
            self._hook = (a["data-metric"], a["data-model"], a.get("data-domain"), a["data-field"])
            self._text = ""
        elif a.get("id") in ("sample-shown", "sample-count"):
            self._id, self._text = a["id"], ""

    def handle_endtag(self, tag):
        if tag in ("span", "b") and self._hook:
            self.hooks[self._hook] = self._text.strip()
            self._hook = None
        elif tag == "b" and self._id:
            self.by_id[self._id] = self._text.strip()
            self._id = None
        elif tag == "table":
            self._sample = False
        elif tag == "select":
            self._select = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._hook or self._id:
            self._text += data
        if self._row is not None:
            self._row["text"] += data

    def visible(self) -> list[dict]:
        return [r for r in self.rows if "hidden" not in r]


def page_data(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    assert m, "no report-data block"
    return json.loads(m.group(1))


def check_self_contained(text: str, dom: Page, kind: str, strict: bool = True) -> None:
    """No URL fetched, scripts inline, plots as PNG data URIs; ``strict``: no http(s):// at all."""
    assert len(dom.scripts) == 2 and dom.scripts.count("application/json") == 1, dom.scripts
    assert len(re.findall(r"<script", text, re.I)) == 2
    assert all(u.startswith(("#", "data:image/png;base64,")) for u in dom.urls), dom.urls
    assert not re.search(r"<link|@import|url\(", text, re.I)
    assert {i["data-plot"] for i in dom.imgs} == PLOTS[kind]
    if strict:
        assert "http://" not in text and "https://" not in text


def check_numbers(dom: Page, metrics: dict[str, dict], cis: dict[str, dict]) -> None:
    """Each model's headline values equal its metrics.json (as displayed: 1 decimal), the CIs
    equal ``cis`` (metrics.json for one run, comparison.json's for a comparison), and the
    per-domain table equals metrics.json ``by_domain``."""
    for label, m in metrics.items():
        for metric in JOINT_FIRST:
            shown = dom.hooks[(metric.name, label, None, "value")]
            assert shown == fmt((m.get(metric.name) or {}).get("value")), (label, metric.name)
            assert dom.hooks[(metric.name, label, None, "ci")] == ci_text(
                cis[label].get(metric.name)), (label, metric.name)
        assert dom.hooks[("n_prompts", label, None, "value")] == str(m["n_prompts"])
        assert m["by_domain"]
        for dom_name, v in m["by_domain"].items():
            assert dom.hooks[("n", label, dom_name, "value")] == str(v["n"])
            for metric in JOINT_FIRST:
                assert dom.hooks[(metric.name, label, dom_name, "value")] == fmt(v[metric.name])
        cfr = m["cultural_failure_rate"]
        assert dom.hooks[("undecided", label, None, "prompts")] == str(cfr["undecided"])
        assert dom.hooks[("undecided", label, None, "bounds")] == \
            f"[{fmt(cfr['bounds'][0])}, {fmt(cfr['bounds'][1])}]"


# ---- jobs.compare over two synthetic runs --------------------------------------------------------


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    data = write_dataset(root / "data.jsonl")
    alpha = write_run(root, "0_alpha", "alpha", data, MODELS["alpha"], 1, judge2=True,
                      determinism={"sample_prompts": 6, "responses": 12, "responses_changed": 3,
                                   "responses_changed_share": 0.25, "verdicts": 60,
                                   "verdicts_changed": 7, "verdicts_changed_share": 7 / 60,
                                   "verdicts_same_response": 45,
                                   "verdicts_changed_same_response": 2})
    beta = write_run(root, "1_beta", "beta", data, MODELS["beta"], 2)
    for name, col, text in (("generations", "prompt", EVIL_PROMPT),
                            ("generations", "response", EVIL_RESPONSE),
                            ("judgments", "rationale", EVIL_RATIONALE)):
        t = pq.read_table(alpha / f"{name}.parquet")
        t = t.set_column(t.schema.get_field_index(col), t.schema.field(col),
                         pa.array([f"{text} {i}" for i in range(t.num_rows)], pa.string()))
        pq.write_table(t, alpha / f"{name}.parquet")
    out = root / "compare"
    t0 = time.perf_counter()
    proc = run_job("compare", f"runs=[{alpha},{beta}]", f"run_dir={out}", "n_resamples=2000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"runs": [alpha, beta], "out": out, "proc": proc, "seconds": time.perf_counter() - t0}


def test_compare_writes_a_self_contained_escaped_page(compared):
    out, proc = compared["out"], compared["proc"]
    page = out / "report.html"
    assert f"report: {page}" in proc.stdout and f"report: {out / 'report.md'}" in proc.stdout
    text = page.read_text()
    dom = Page(text)
    check_self_contained(text, dom, "compare")
    for evil in (EVIL_PROMPT, EVIL_RESPONSE, EVIL_RATIONALE):
        assert evil not in text  # only escaped: &lt;script&gt; ...
    assert "&lt;script&gt;document.body.dataset.pwned" in text
    data = page_data(text)
    rows = data["samples"]["rows"]
    assert len(rows) == 200 and data["samples"]["total"] == 2 * 2 * 120  # capped, 2 seeds
    assert "capped at 200" in text and {r["model"] for r in rows} == {"alpha", "beta"}
    assert any(r["prompt"].startswith(EVIL_PROMPT) for r in rows)  # JSON keeps the raw text
    comparison = json.loads((out / "comparison.json").read_text())
    assert data["models"] == json.loads(json.dumps(comparison["models"]))


def test_compare_page_in_chromium(compared, chromium, tmp_path):
    out = compared["out"]
    comparison = json.loads((out / "comparison.json").read_text())
    metrics = {label: json.loads((run / "metrics.json").read_text())
               for label, run in zip(("alpha", "beta"), compared["runs"], strict=True)}
    t0 = time.perf_counter()
    dumped = browse(chromium, out / "report.html", tmp_path)
    seconds = time.perf_counter() - t0
    dom = Page(dumped)
    assert dom.body.get("data-js") == "ready" and dom.body.get("data-samples") == "200"
    assert "data-pwned" not in dumped and "pwned" not in dom.body  # nothing planted ran
    check_self_contained(dumped, dom, "compare")
    check_numbers(dom, metrics, comparison["models"])
    for r in comparison["pairwise"]:
        pair = f"{r['a']} vs {r['b']}"
        assert dom.hooks[(r["metric"], pair, None, "diff")] == fmt(r["diff"])
        assert dom.hooks[(r["metric"], pair, None, "ci")] == ci_text(r)
    for label, j in comparison["judges"].items():
        assert dom.hooks[("position_flip", label, None, "rate")] == \
            fmt(j["position_flip"]["flip_rate"], 2)
        assert dom.hooks[("unscored", label, None, "rate")] == fmt(j["unscored"]["rate"], 3)
    kappa = comparison["judges"]["alpha"]["judge2"]["pooled"]["kappa"]
    assert dom.hooks[("kappa", "alpha", None, "pooled")] == fmt(kappa, 2)
    # the planted markup is text of its cell, not elements
    assert any(EVIL_PROMPT in r["text"] and EVIL_RESPONSE in r["text"] for r in dom.rows)
    # filters: every value of the sample is an option; unfiltered, all 200 rows show
    rows = page_data(dumped)["samples"]["rows"]
    assert dom.selects["filter-model"] == ["", "alpha", "beta"]
    assert set(dom.selects["filter-domain"]) == {""} | {r["domain"] for r in rows}
    assert set(dom.selects["filter-verdict"]) == {""} | {r["outcome"] for r in rows}
    assert len(dom.visible()) == 200 and dom.by_id["sample-shown"] == "200"
    assert seconds < 60, seconds


def test_compare_filters_through_the_url_fragment(compared, chromium, tmp_path):
    page = compared["out"] / "report.html"
    rows = page_data(page.read_text())["samples"]["rows"]
    domain = max({r["domain"] for r in rows}, key=lambda d: sum(r["domain"] == d for r in rows))
    for want in ({"domain": domain, "verdict": "fail"}, {"model": "beta", "verdict": "pass"}):
        expected = [r for r in rows if all(r[k if k != "verdict" else "outcome"] == v
                                           for k, v in want.items())]
        assert expected and len(expected) < len(rows)
        fragment = "&".join(f"{k}={quote(v)}" for k, v in want.items())
        dom = Page(browse(chromium, page, tmp_path, fragment))
        shown = dom.visible()
        assert len(shown) == len(expected) and dom.by_id["sample-shown"] == str(len(expected))
        assert [(r["data-model"], r["data-domain"], r["data-verdict"]) for r in shown] == \
            [(r["model"], r["domain"], r["outcome"]) for r in expected]
    dom = Page(browse(chromium, page, tmp_path, "verdict=no-such-verdict"))
    assert len(dom.visible()) == 200  # an unknown value selects "all"


def test_compare_plots_reach_wandb_as_images(compared):
    out = compared["out"]
    runs = [p.parent for p in (out / "wandb").rglob("*.wandb")]
    assert len(runs) == 1
    summary = read_offline_summary(runs[0])["summary"]
    for name in PLOTS["compare"]:
        img = summary[f"plots/{name}"]
        assert img["_type"] == "image-file" and img["format"] == "png"
        assert (runs[0] / "files" / img["path"]).read_bytes() == \
            (out / "plots" / f"{name}.png").read_bytes()


# ---- one benchmark run ---------------------------------------------------------------------------


def test_benchmark_page_equals_metrics_json(compared, chromium, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(compared["runs"][1], run)
    r = load_run(run)
    report = benchmark_report(run, r.metrics, r.judgments, r.generations, r.row_class)
    assert report["html"] == run / "report.html" and set(report["plots"]) == PLOTS["benchmark"]
    dom = Page(browse(chromium, run / "report.html", tmp_path))
    assert dom.body.get("data-kind") == "benchmark" and dom.body.get("data-js") == "ready"
    check_self_contained(report["html"].read_text(), dom, "benchmark")
    check_numbers(dom, {"beta": r.metrics}, {"beta": r.metrics})  # the run's own CIs
    assert not [k for k in dom.hooks if k[3] == "diff"]  # no pairwise section for one run


def test_benchmark_page_without_matplotlib(compared, monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    run = tmp_path / "run"
    shutil.copytree(compared["runs"][1], run)
    r = load_run(run)
    report = benchmark_report(run, r.metrics, r.judgments, r.generations, r.row_class)
    text = report["html"].read_text()
    assert report["plots"] == {} and not (run / "plots").exists()
    assert "<img" not in text and "matplotlib is not installed" in text
    assert Page(text).hooks[("win_rate", "beta", None, "value")] == \
        fmt(r.metrics["win_rate"]["value"])


def test_json_block_cannot_close_its_script():
    data = {"x": "</script><script>alert(1)</script> & \u2028", "n": float("nan")}
    block = report_html._json_block(clean(data))
    assert block.count("</script>") == 1 and "<script>alert" not in block
    text = block.split(">", 1)[1].rsplit("</script>", 1)[0]
    assert json.loads(text) == {"x": data["x"], "n": None}


# ---- the real quickstart benchmark (vLLM) --------------------------------------------------------


@pytest.mark.slow
def test_quickstart_benchmark_page(quickstart_benchmark, chromium, tmp_path):
    run_dir, proc = quickstart_benchmark
    page = run_dir / "report.html"
    assert f"report: {page}" in proc.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    text = page.read_text()
    dom = Page(browse(chromium, page, tmp_path))
    assert dom.body.get("data-js") == "ready"
    check_self_contained(text, dom, "benchmark", strict=False)  # real prompts may cite a URL
    label = metrics["model"]
    check_numbers(dom, {label: metrics}, {label: metrics})
    pf = metrics["position_flip"]
    assert dom.hooks[("position_flip", label, None, "rate")] == fmt(pf["flip_rate"], 2)
    rows = page_data(text)["samples"]["rows"]
    assert len(dom.visible()) == len(rows) == metrics["generation_failed"]["total"]
    gens = pq.read_table(run_dir / "generations.parquet").to_pylist()
    assert {(g["row_id"], g["prompt"]) for g in gens} == {(r["row_id"], r["prompt"]) for r in rows}
    wb = [p.parent for p in (run_dir / "wandb").rglob("*.wandb")]
    summary = read_offline_summary(wb[-1])["summary"]
    assert {k for k in summary if k.startswith("plots/")} == {f"plots/{n}" for n in
                                                              PLOTS["benchmark"]}
    assert all(summary[f"plots/{n}"]["_type"] == "image-file" for n in PLOTS["benchmark"])
