"""The sbatch script renderer and the submitit launcher presets (no Slurm needed).

The golden file pins the exact script for a 4-node x 8-GPU job. After an intended change to the
template or renderer, regenerate it and review the diff:
    UPDATE_GOLDEN=1 python -m pytest tests/test_slurm_render.py && git diff tests/golden/
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from aligncultura.cluster import slurm
from aligncultura.cluster.slurm import render_sbatch, submit

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "sbatch_4x8.sh"
GOLDEN_SWEEP = ROOT / "tests" / "golden" / "submitit_gpu_sweep.sh"


def check_golden(path: Path, text: str) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{path.name} changed: UPDATE_GOLDEN=1 to accept it"


def render_4x8() -> str:
    return render_sbatch(
        "benchmark",
        ["model=llama_3_1_8b_instruct", "judge=prometheus", "+tag='4x8 run'"],
        nodes=4,
        gpus_per_node=8,
        cpus_per_task=64,
        partition="gpu",
        account="proj123",
        qos="high",
        time="08:00:00",
        mem="480G",
        setup=["module load cuda/12.4", "source /opt/venvs/aligncultura/bin/activate"],
        run_dir="/scratch/aligncultura/runs/benchmark-4x8",
        extra_sbatch=["--exclusive"],
    )


def test_sbatch_4x8_matches_golden():
    check_golden(GOLDEN, render_4x8())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(nodes=1),
        dict(nodes=4, gpus_per_node=8, cpus_per_task=64, partition="gpu", mem="480G"),
        dict(
            nodes=2,
            container="apptainer exec --nv /img/ac.sif",
            ray_bootstrap_home=True,
            setup=["module load cuda"],
            signal=None,
            requeue=False,
        ),
    ],
    ids=["1node", "4nodes", "container"],
)
def test_rendered_scripts_are_valid_bash(tmp_path, kwargs):
    text = render_sbatch("generate", ["model=smollm2_135m"], run_dir=str(tmp_path), **kwargs)
    script = tmp_path / "sbatch.sh"
    script.write_text(text)
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "{{" not in text
    nodes = kwargs["nodes"]
    assert f"#SBATCH --nodes={nodes}\n" in text
    assert ("#SBATCH --gpus-per-node=" in text) == bool(kwargs.get("gpus_per_node"))


def _bash_array(text: str, name: str) -> list[str]:
    """What bash makes of the `NAME=(...)` line in a rendered script."""
    line = re.search(rf"^{name}=\(.*\)", text, re.M).group(0)
    out = subprocess.run(
        ["bash", "-c", f'{line}\nprintf "%s\\0" "${{{name}[@]}}"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split("\0")[:-1]


def test_overrides_and_container_survive_shell_quoting(tmp_path):
    overrides = ["model=qwen3_8b", "+note='it''s a \"test\"'", "dataset.path=/d/x y.csv", "a=$HOME"]
    text = render_sbatch(
        "benchmark",
        overrides,
        run_dir=str(tmp_path),
        container="apptainer exec --bind '/a b' img.sif",
    )
    assert _bash_array(text, "DRIVER") == [
        "python",
        "-m",
        "jobs.benchmark",
        *overrides,
        f"run_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}",
    ]
    assert _bash_array(text, "CONTAINER") == ["apptainer", "exec", "--bind", "/a b", "img.sif"]
    custom = render_sbatch(
        "x", ["ignored=1"], run_dir=str(tmp_path), driver_cmd="python -c 'print(1)'"
    )
    assert _bash_array(custom, "DRIVER") == ["python", "-c", "print(1)"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(job="jobs/benchmark"), "module name"),
        (dict(run_dir="/tmp/has space"), "whitespace"),
        (dict(nodes=0), "nodes >= 1"),
        (dict(extra_sbatch=["exclusive"]), "one option"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    args = {"job": "benchmark", "run_dir": "/tmp/r", **kwargs}
    with pytest.raises(ValueError, match=match):
        render_sbatch(args.pop("job"), [], **args)


def _fake_sbatch(tmp_path, monkeypatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f"#!/bin/bash\n{body}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_submit_writes_the_script_then_calls_sbatch(tmp_path, monkeypatch):
    # unit test of the plumbing; tests/test_slurm_live.py submits to a real Slurm
    _fake_sbatch(
        tmp_path, monkeypatch, '[[ $1 == --parsable && -s $2 ]] && echo "4242;cluster" || exit 9'
    )
    run_dir = tmp_path / "runs" / "a"
    assert submit("#!/bin/bash\necho hi\n", run_dir) == "4242"
    assert (run_dir / "sbatch.sh").read_text() == "#!/bin/bash\necho hi\n"


def test_submit_reports_sbatch_errors(tmp_path, monkeypatch):
    _fake_sbatch(tmp_path, monkeypatch, 'echo "sbatch: error: invalid partition" >&2; exit 1')
    with pytest.raises(RuntimeError, match="invalid partition"):
        submit("#!/bin/bash\n", tmp_path / "r")


def test_cli_dry_run_prints_the_script(tmp_path, capsys):
    rc = slurm.main(
        [
            "submit",
            "--job",
            "benchmark",
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
            "--setup",
            "module load cuda",
            "--run-dir",
            str(tmp_path),
            "--dry-run",
            "--",
            "model=qwen3_8b",
            "judge=prometheus",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --gpus-per-node=4\n" in text
    assert f"#SBATCH --chdir={os.getcwd()}\n" in text
    assert _bash_array(text, "DRIVER")[3:] == [
        "model=qwen3_8b",
        "judge=prometheus",
        f"run_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}",
    ]


# ---- Hydra multirun presets: what submitit would put in its sbatch script for a GPU sweep

SWEEP_GPU = [
    "hydra.launcher.partition=gpu",
    "hydra.launcher.gpus_per_node=8",
    "hydra.launcher.cpus_per_task=32",
    "hydra.launcher.mem_gb=256",
    "hydra.launcher.account=proj123",
    "hydra.launcher.setup=[module load cuda/12.4]",
    "+hydra.launcher.additional_parameters.constraint=a100",
]


def _launcher(preset: str, overrides: list[str]):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    if not (ROOT / "conf" / "generate.yaml").exists():
        pytest.skip("conf/generate.yaml (a job config to compose) does not exist yet")
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import aligncultura.config  # noqa: F401  (registers the structured schemas)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "generate", overrides=[f"hydra/launcher={preset}", *overrides], return_hydra_config=True
        )
        return instantiate(cfg.hydra.launcher)


def _submitit_sbatch(params: dict, folder: Path) -> str:
    """Map launcher params onto submitit exactly as hydra-submitit-launcher 1.2.0's launch()."""
    import submitit

    base = {
        "timeout_min",
        "cpus_per_task",
        "gpus_per_node",
        "tasks_per_node",
        "mem_gb",
        "nodes",
        "name",
        "stderr_to_stdout",
    }
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=folder, slurm_max_num_timeout=params["max_num_timeout"]
    )
    executor.update_parameters(
        **{  # raises on a key submitit does not know
            k if k in base else f"slurm_{k}": v
            for k, v in params.items()
            if k not in {"submitit_folder", "max_num_timeout"}
        }
    )
    return executor._executor._make_submission_file_text("python -u job.py", "uid")


def test_slurm_preset_for_a_gpu_sweep(tmp_path):
    launcher = _launcher("slurm", SWEEP_GPU)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = launcher.params
    assert params["nodes"] == 1 and params["tasks_per_node"] == 1
    assert params["max_num_timeout"] > 0 and params["signal_delay_s"] == 120
    text = _submitit_sbatch(params, tmp_path)
    for line in [
        "--partition=gpu",
        "--gpus-per-node=8",
        "--cpus-per-task=32",
        "--mem=256GB",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--account=proj123",
        "--constraint=a100",
        "--signal=USR2@120",
        "--time=240",
    ]:
        assert f"#SBATCH {line}\n" in text, f"{line} missing from:\n{text}"
    assert "\nmodule load cuda/12.4\n" in text
    # the whole script submitit writes for each array task of this sweep
    check_golden(GOLDEN_SWEEP, text.replace(str(tmp_path), "<sweep dir>/.submitit/%j"))


def test_local_preset_composes():
    launcher = _launcher("local", [])
    assert type(launcher).__name__ == "LocalLauncher"
    assert launcher.params["nodes"] == 1 and launcher.params["tasks_per_node"] == 1
