"""Compare benchmark runs: `python -m jobs.compare runs=[dir1,dir2,...] run_dir=PATH`.

`runs` also takes a glob of a sweep dir (`runs='runs/multirun/benchmark/<time>/*'`). Writes
`comparison.json`, `report.md`, `report.html` (self-contained: aligncultura/compare/html.py) and
`plots/*.png` into the run dir and mirrors them to W&B as a run of job_type "compare" in the
sweep's group (the plots as images). See aligncultura/compare/comparison.py for what is
compared, aligncultura/compare/bootstrap.py for the clustered, paired bootstrap and
aligncultura/stats.py for the bootstrap p-value and the Holm correction.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import OmegaConf

from aligncultura.benchmark.report import results_table
from aligncultura.compare.comparison import compare
from aligncultura.compare.html import write_html
from aligncultura.compare.report import render, wandb_tables
from aligncultura.compare.report_data import from_comparison
from aligncultura.compare.runs import Run, load_runs
from aligncultura.errors import JobError
from aligncultura.jobkit import cli, launch, precheck
from aligncultura.rundir import start_run

CONF = Path(__file__).resolve().parent.parent / "conf"


def make_plots(result: dict[str, Any], out: Path) -> dict[str, str]:
    """Draw every figure of `result` into `out`; returns name -> path relative to the run dir."""
    from aligncultura.compare import plots

    figures = {"metrics": plots.metrics_figure(result["models"]),
               "failures": plots.failure_heatmap(result["failures"],
                                                 result["method"]["min_cell_n"]),
               "efficiency": plots.efficiency_figure(result["efficiency"])}
    if result["pairwise"]:
        figures["pairwise"] = plots.pairwise_figure(result["pairwise"])
    return {name: str(plots.save(fig, out / f"{name}.png").relative_to(out.parent))
            for name, fig in figures.items()}


def wandb_group(cfg: Any, runs: list[Run], fallback: str) -> str:
    """The sweep's group: compare.wandb.group, else the runs' own group when they share one (a
    benchmark's default group is its parent dir's name), else the compare run dir's name."""
    if cfg.wandb.group:
        return str(cfg.wandb.group)
    groups = {(r.config.get("wandb") or {}).get("group") or r.path.parent.name for r in runs}
    return groups.pop() if len(groups) == 1 else fallback


def run(cfg: Any) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "runs"):
        raise JobError("runs= is missing: give benchmark run dirs, runs=[dir1,dir2] or "
                       "runs='sweep/*'")
    if cfg.plots and importlib.util.find_spec("matplotlib") is None:
        raise JobError("plots=true needs matplotlib: pip install matplotlib (or plots=false)")
    runs_spec = OmegaConf.to_container(cfg.runs) if OmegaConf.is_config(cfg.runs) else cfg.runs
    runs = load_runs(runs_spec, exclude=Path(cfg.run_dir) if cfg.run_dir else None,
                     include_failed=cfg.include_failed)
    print(f"compare: {len(runs)} run(s): {', '.join(r.label for r in runs)}; "
          f"{cfg.n_resamples} resamples clustered by subdomain", flush=True)
    result = compare(runs, cfg)
    inputs = [str(r.path / f) for r in runs for f in ("metrics.json", "judgments.parquet")]
    rd = start_run(cfg, "compare", inputs)
    plots = make_plots(result, rd / "plots") if cfg.plots else {}
    result["plots"] = plots
    rd.write_json("comparison.json", result)
    (rd / "report.md").write_text(render(result, plots))
    images = {name: rd.path / rel for name, rel in plots.items()}
    write_html(rd / "report.html", from_comparison(result, runs), images)
    wb = _log_wandb(cfg, rd.path, result, runs, images)
    rows = [{**result["models"][r.label], "model": r.label, "unscored": r.metrics.get("unscored"),
             "efficiency": r.metrics.get("efficiency"),
             "generation_failed": r.metrics.get("generation_failed")} for r in runs]
    table = results_table(rows).splitlines()  # its CI footer describes the benchmark's bootstrap
    print("\n".join(line for line in table if not line.startswith("percent, 95%")))
    print(f"percent, {cfg.confidence:.0%} CI: bootstrap over subdomains, then prompts within; "
          "SS and fail: lower is better")
    for p in result["pairwise"]:
        if p["significant"]:
            print(f"significant (Holm): {p['a']} - {p['b']} {p['metric']} {p['diff']:+.1f} "
                  f"[{p['ci_low']:.1f}, {p['ci_high']:.1f}] p_holm={p['p_holm']:.3g}")
    if result["pairwise_note"]:
        print(result["pairwise_note"])
    for n in result["notes"]:
        print(f"note: {n}")
    if wb.get("status") == "ok" and wb.get("mode") == "offline":
        print(f"W&B (offline): {wb.get('dir')}")
    print(f"report: {rd / 'report.md'}")
    print(f"report: {rd / 'report.html'}", flush=True)
    return {"run_dir": str(rd.path), "comparison": result, "wandb": wb}


def _log_wandb(cfg: Any, path: Path, result: dict[str, Any], runs: list[Run],
               images: dict[str, Path]) -> dict[str, Any]:
    if cfg.wandb.mode == "disabled":
        return {"status": "disabled"}
    from aligncultura.tracking import log_run

    summary = {"models": result["models"], "method": result["method"],
               "pairwise": {f"{p['a']} vs {p['b']}/{p['metric']}":
                            {k: p[k] for k in ("diff", "ci_low", "ci_high", "p", "p_holm",
                                               "significant")} for p in result["pairwise"]}}
    artifacts = {"comparison": path / "comparison.json", "comparison-report": path / "report.md",
                 "comparison-report-html": path / "report.html"}
    if (path / "plots").exists():
        artifacts["comparison-plots"] = path / "plots"
    return log_run(path, cfg.wandb, name=f"compare-{len(runs)}-runs", job_type="compare",
                   group=wandb_group(cfg, runs, path.name),
                   config=OmegaConf.to_container(cfg, resolve=True), summary=summary,
                   tables=wandb_tables(result), artifacts=artifacts,
                   images={f"plots/{name}": p for name, p in images.items()})


@hydra.main(version_base="1.3", config_path="../conf", config_name="compare")
def _hydra_main(cfg: Any) -> None:
    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "compare", ())
    launch(_hydra_main)


if __name__ == "__main__":
    sys.exit(main())
