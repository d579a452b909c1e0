"""Stage I: build the dataset. `python -m jobs.build_dataset seeds.path=... run_dir=PATH`.

    python -m jobs.build_dataset                                   # embedded sample, CPU demo
    python -m jobs.build_dataset seeds=culturax seeds.path=/data/CulturaX.csv builder=cluster
    python -m jobs.build_dataset model@roles.critic=qwen3_8b ...  # rebind one role
    python -m jobs.build_dataset 'dedup.references=[{name:eval,path:/data/eval.jsonl,class_field:null}]'

Seeds and reference corpora follow the data contract (InputConfig); `builder=cpu|cluster` sets
the three roles and the step sizes together. The steps, outputs and accounting are described in
aligncultura/builder/ (pipeline.py reads top to bottom). A rerun of the same command serves every
finished request from the row cache.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra

from aligncultura.builder import config as _config  # noqa: F401  (registers the schema)
from aligncultura.builder.pipeline import build
from aligncultura.jobkit import cli, launch, precheck

CONF = Path(__file__).resolve().parent.parent / "conf"


def run(cfg: Any) -> dict[str, Any]:
    return build(cfg)


@hydra.main(version_base="1.3", config_path="../conf", config_name="build_dataset")
def _hydra_main(cfg: Any) -> None:
    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "build_dataset", ("seeds", "builder", "engine"))
    launch(_hydra_main)


if __name__ == "__main__":
    sys.exit(main())
