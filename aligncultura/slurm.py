"""``python -m aligncultura.slurm``: the Slurm command line, short for
``python -m aligncultura.cluster.slurm`` (same options; see that module).

    python -m aligncultura.slurm submit --job generate --nodes 2 --cpus-per-task 2 -- \\
        experiment=quickstart engine.replicas=2
"""

from __future__ import annotations

import sys

from aligncultura.cluster.slurm import main, render_sbatch, submit, submit_sweep

__all__ = ["main", "render_sbatch", "submit", "submit_sweep"]

if __name__ == "__main__":
    sys.exit(main(prog="python -m aligncultura.slurm"))
