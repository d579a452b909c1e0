"""The `engine=cpu` preset as the benches use it when they drive `LLMStage` directly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from aligncultura.engine.vllm_stage import OFFLINE_ENV

PRESET = Path(__file__).resolve().parent.parent / "conf" / "engine" / "cpu.yaml"


def cpu_engine_kwargs() -> dict[str, Any]:
    """Set the preset's environment (before vllm is imported) and return its engine_kwargs."""
    preset = OmegaConf.load(PRESET)
    for k, v in {**OFFLINE_ENV, **{k: str(v) for k, v in preset.env.items()}}.items():
        os.environ.setdefault(k, v)
    return OmegaConf.to_container(preset.engine_kwargs)
