"""Stage I: build the dataset. `python -m jobs.build_dataset seeds.path=... run_dir=PATH`.

Seeds follow the data contract (`seeds=culturax seeds.path=/data/CulturaX.csv` for the released
CSV); `builder=cpu|cluster` picks the role models and step sizes. See aligncultura/builder/.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra

from aligncultura.builder import config as _config  # noqa: F401  (registers the schema)
from aligncultura.builder.pipeline import build
from aligncultura.jobkit import cli, precheck

CONF = Path(__file__).resolve().parent.parent / "conf"


def run(cfg: Any) -> dict[str, Any]:
    return build(cfg)


@hydra.main(version_base="1.3", config_path="../conf", config_name="build_dataset")
def _hydra_main(cfg: Any) -> None:
    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "build_dataset", ("seeds", "builder", "engine"))
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
