"""Judges against gold labels: `python -m jobs.judge_agreement labels=FILE judge=<preset>
[scorer/harmless=<preset> ...] run_dir=PATH`.

Every labelled (prompt, response) is judged on each labelled criterion: by the scorer of that
criterion when one is given (`scorer/<criterion>=...`), else by the rubric judge (`judge=`).
Writes judgments.parquet (JUDGMENT_SCHEMA, model `labels`), agreement.json (per criterion:
accuracy, Cohen's kappa, and for scorers ROC AUC and the threshold that matches the gold base
rate, with CIs, per domain when the file has domains; see aligncultura/benchmark/labels.py for
the file format) and prints one line per criterion. With `compare_rubric=true` the rubric
judge also judges the criteria a scorer holds, and both come out side by side.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
import pyarrow as pa

from aligncultura.benchmark.judging import judge_responses
from aligncultura.benchmark.labels import agreement, read_labels
from aligncultura.benchmark.scorers import check_scorer
from aligncultura.config import command_line_keys  # noqa: F401  (registers the schemas)
from aligncultura.engine.models import resolve_model
from aligncultura.errors import JobError
from aligncultura.jobkit import cli, launch, precheck
from aligncultura.rundir import start_run

CONF = Path(__file__).resolve().parent.parent / "conf"
SAMPLE = "judge_labels.jsonl"


def _judges(cfg: Any, criteria: tuple[str, ...]) -> list[tuple[Any, Any, tuple[str, ...]]]:
    """(judge config, resolved model, criteria) per judge that has work."""
    by_scorer = {}
    for criterion in criteria:
        jc = cfg.scorer.get(criterion) if criterion != "helpful" else None
        if jc is not None:
            problem = check_scorer(jc, f"scorer.{criterion}", criterion)
            if problem:
                raise JobError(problem)
            by_scorer[criterion] = jc
    rest = tuple(c for c in criteria if c not in by_scorer or cfg.compare_rubric)
    out = []
    if rest:
        if cfg.judge is None:
            raise JobError(f"no judge for {', '.join(rest)}: give judge=<preset> or "
                           f"scorer/<criterion>=<preset>")
        out.append((cfg.judge, resolve_model(cfg.judge.model, key="judge.model",
                                             provision=not cfg.dry_run), rest))
    for criterion, jc in by_scorer.items():
        out.append((jc, resolve_model(jc.model, key=f"scorer.{criterion}.model",
                                      provision=not cfg.dry_run), (criterion,)))
    return out


def run(cfg: Any) -> dict[str, Any]:
    path = cfg.labels or str(resources.files("aligncultura.data") / "sample_data" / SAMPLE)
    labelled = read_labels(path, "labels")
    criteria = tuple(c for c in cfg.criteria if any(r.get(c) for r in labelled))
    if not criteria:
        raise JobError(f"labels={path}: none of criteria={list(cfg.criteria)} is labelled")
    judges = _judges(cfg, criteria)
    print(f"plan: {len(labelled)} labelled responses; "
          + "; ".join(f"{', '.join(c)} by {m.name} ({jc.kind})" for jc, m, c in judges), flush=True)
    if cfg.dry_run:
        return {"dry_run": True}
    rd = start_run(cfg, "judge_agreement", [path])
    gens = pa.table({"row_id": [r["id"] for r in labelled],
                     "sample_index": pa.array([0] * len(labelled), pa.int32()),
                     "status": ["ok"] * len(labelled),
                     "response": [r["response"] for r in labelled]})
    meta = {r["id"]: {"question": r["question"], "subdomain": None, "class_id": None,
                      "helpful_ref": None, "honest_ref": None} for r in labelled}
    tables, result = [], {}
    for jc, model, crit in judges:
        judged, _, _ = judge_responses(cfg, gens, meta, jc, model, crit, "labels", {})
        tables.append(judged)
        result[f"{model.name} ({jc.kind})"] = agreement(labelled, judged.to_pylist(),
                                                        int(cfg.n_resamples), int(cfg.ci_seed))
    rd.write_parquet("judgments.parquet", pa.concat_tables(tables))
    rd.write_json("agreement.json", result)
    for judge, per in result.items():
        for criterion, a in per.items():
            auc = f", AUC {a['auc']:.3f}" if a.get("auc") is not None else ""
            kappa = f"{a['kappa']:.3f}" if a.get("kappa") is not None else "n/a"
            acc = f"{a['accuracy']:.3f}" if a.get("accuracy") is not None else "n/a"
            print(f"{criterion:<12} {judge}: accuracy {acc} (n={a['n']}, unscored "
                  f"{a['unscored']}), kappa {kappa}{auc}", flush=True)
    print(f"run dir: {rd.path}", flush=True)
    return {"run_dir": str(rd.path), "agreement": result}


@hydra.main(version_base="1.3", config_path="../conf", config_name="judge_agreement")
def _hydra_main(cfg: Any) -> None:
    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "judge_agreement", ("judge", "engine"))
    launch(_hydra_main)


if __name__ == "__main__":
    sys.exit(main())
