"""Hydra configs of jobs.leakage and jobs.dedup, registered on import (`register`), and the
helpers that turn their nodes into the core's configs (`core_config`) and data-contract
reads (`read_side`, `ref_input`).

The eval side (and dedup's input) follows the data contract (`InputConfig`, read with
`data.load_prompts`: per-row quarantine, splits); the reference corpus is read by
references.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from aligncultura.config import InputConfig, command_line_keys
from aligncultura.data.reader import load_prompts

from .clusters import DedupConfig
from .scan import LeakageConfig


@dataclass
class ReferenceConfig(InputConfig):
    """The reference corpus: the data contract plus `paths`, a list of files or directories."""

    name: str = "reference"
    paths: list[str] = field(default_factory=list)
    text_field: str = "text"
    id_field: str | None = "id"  # required for Parquet/JSONL; CSV falls back to name:index
    class_field: str | None = None


@dataclass
class LeakageJobConfig:
    eval: InputConfig = field(default_factory=InputConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    leakage: LeakageConfig = field(default_factory=LeakageConfig)
    executor: str = "local"  # local (in this process) | ray (Ray Data map_batches)
    num_workers: int | None = None  # Ray: concurrent scan tasks (null = all CPUs)
    run_dir: str | None = None
    progress: bool = True  # live progress of the reference scan on stderr
    verbose: bool = False  # Ray's own lines on the terminal (else logs/)


@dataclass
class DedupJobConfig:
    input: InputConfig = field(default_factory=InputConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    # local: everything in this process | ray: fingerprints (SimHash, or MinHash band keys
    # and set keys) computed by Ray tasks spread over the nodes, one per block of batch_size
    # rows; candidates, exact verification and union-find on the driver (identical result)
    executor: str = "local"
    num_workers: int | None = None  # Ray: fingerprint tasks in flight (null = 2 x all CPUs)
    batch_size: int = 4096  # Ray: rows per fingerprint task (local blocks: at most 1024 rows)
    run_dir: str | None = None
    progress: bool = True  # live progress of the input's read (pass 1) on stderr
    verbose: bool = False  # Ray's own lines on the terminal (else logs/)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="leakage_schema", node=LeakageJobConfig)
    cs.store(name="dedup_schema", node=DedupJobConfig)


register()


def core_config(node: Any, key: str) -> Any:
    """The core's dataclass (LeakageConfig / DedupConfig) from its node, validated."""
    from omegaconf import OmegaConf

    from aligncultura.errors import JobError

    try:
        return OmegaConf.to_object(node)
    except ValueError as exc:
        raise JobError(f"{key}: {str(exc).splitlines()[0]}") from None


def read_side(cfg: Any, key: str):
    """`load_prompts` with the config key (eval/input) in its one-line errors."""
    return load_prompts(cfg, key, command_line_keys())


def ref_input(ref: Any) -> InputConfig:
    """The data-contract view of the reference config (for CSV files)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(ref, resolve=True) if not isinstance(ref, dict) else dict(ref)
    data.pop("paths", None)
    return InputConfig(**data)
