"""What the run dir manifest records about the machine and the Slurm job (the real Slurm job's
manifest is checked in tests/test_slurm_sweep.py)."""

from __future__ import annotations

import importlib.util
import os
import stat
from types import SimpleNamespace

from aligncultura import rundir


def test_cuda_version_is_read_without_importing_torch(tmp_path, monkeypatch):
    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "version.py").write_text("__version__ = '2.6.0+cu124'\ncuda: Optional[str] = '12.4'\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: SimpleNamespace(
        submodule_search_locations=[str(pkg)]) if name == "torch" else real(name, *a))
    assert rundir.accelerator_facts()["cuda"] == "12.4"
    (pkg / "version.py").write_text("cuda: Optional[str] = None\n")
    assert rundir.accelerator_facts()["cuda"] is None


def test_gpu_kinds_from_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/bash\nprintf 'NVIDIA H100 80GB HBM3\\nNVIDIA H100 80GB HBM3\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert rundir.accelerator_facts()["gpus"] == ["NVIDIA H100 80GB HBM3"] * 2


def test_no_gpu_and_no_slurm(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither nvidia-smi nor scontrol
    for key in list(os.environ):
        if key.startswith("SLURM_"):
            monkeypatch.delenv(key)
    assert rundir.accelerator_facts()["gpus"] is None
    assert rundir.slurm_facts() == {}
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # scontrol missing: the ids, no script path
    assert rundir.slurm_facts() == {"SLURM_JOB_ID": "77"}
