"""Render and submit the sbatch script that boots Ray over a Slurm allocation and runs a job.

The script (from ``slurm/ray_job.sbatch.tmpl``) starts a Ray head on the first node and Ray workers
on the others, runs the *same* ``python -m jobs.<job> <hydra overrides> run_dir=...`` as on a
laptop with ``RAY_ADDRESS`` exported, then stops this job's Ray and exits with the driver's code.

    script = render_sbatch("benchmark", ["model=llama3_70b"], nodes=4, gpus_per_node=8,
                           partition="gpu", run_dir="/scratch/runs/bench-1")
    job_id = submit(script, "/scratch/runs/bench-1")  # writes run_dir/sbatch.sh, then sbatch

Command line (prints the job id and the run dir, then returns: nothing waits for the job;
``python -m aligncultura.slurm`` is the same command):

    python -m aligncultura.cluster.slurm submit --job benchmark --nodes 4 --gpus-per-node 8 \\
        --partition gpu --time 08:00:00 -- model=llama3_70b judge=prometheus

Each Ray node keeps its files in ``/tmp/ray_<job id>/<node>``: nodes sharing a ``/tmp`` (several
slurmds on one host, as ``slurm/setup_local_slurm.sh --nodes 2`` runs them) do not collide.

Hydra sweep syntax (``model=a,b``) submits one such job per combination into a sweep dir, each
with its own run dir ``<sweep dir>/<i>_<overrides>``; ``<dir>/jobs.json`` lists the Slurm job ids
and ``python -m jobs.status <dir>`` reports them. One-node sweeps can also use the submitit
presets (``hydra/launcher=slurm``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "slurm" / "ray_job.sbatch.tmpl"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_JOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def render_sbatch(
    job: str,
    overrides: Sequence[str],
    *,
    nodes: int = 1,
    gpus_per_node: int = 0,
    cpus_per_task: int | None = None,
    partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    time: str = "04:00:00",
    mem: str | None = None,
    setup: Sequence[str] = (),
    container: str | None = None,
    run_dir: str,
    signal: str | None = "B:USR2@120",
    requeue: bool = True,
    extra_sbatch: Sequence[str] = (),
    driver_cmd: Sequence[str] | str | None = None,
    workdir: str | None = None,
    job_name: str | None = None,
    ray_bootstrap_home: bool = False,
    template: str | Path | None = None,
) -> str:
    """Return the text of an sbatch script that runs ``python -m jobs.<job>`` on a Ray cluster.

    job: module under ``jobs/`` (``"benchmark"`` runs ``python -m jobs.benchmark``).
    overrides: Hydra overrides passed to the job, each shell-quoted; ``run_dir=<run_dir>`` is
        appended. The run dir also holds the Slurm logs (``slurm-<jobid>.out/.err``).
    nodes, gpus_per_node, cpus_per_task: one Ray node per Slurm node, each started with
        ``--num-cpus=$SLURM_CPUS_PER_TASK`` (default: the CPUs Slurm gave the node) and
        ``--num-gpus=gpus_per_node``.
    partition, account, qos, time, mem: ``#SBATCH`` options; ``None`` leaves them out.
    setup: shell lines run first (``module load cuda``, ``source .venv/bin/activate``, ...).
    container: a prefix for every ``ray``/``python`` command, e.g. ``"apptainer exec --nv img.sif"``.
    signal: ``--signal`` value; on USR2 the script stops the driver and, if ``requeue``,
        requeues the job (the rerun resumes from the run dir). ``None`` leaves it out.
    extra_sbatch: more ``#SBATCH`` options, e.g. ``("--constraint=a100", "--exclusive")``.
    driver_cmd: replaces the whole driver command (argv list, or one string split like a shell);
        ``overrides`` are then ignored. Used by tests and for one-off scripts.
    workdir: ``#SBATCH --chdir`` (default: the directory ``sbatch`` is called from).
    ray_bootstrap_home: give the Ray processes a HOME with an empty ``ray_bootstrap_config.yaml``,
        which stops the dashboard probing cloud metadata addresses (sandboxes without network).
    template: another template file with the same ``{{placeholders}}``.
    """
    if not _JOB_NAME.match(job):
        raise ValueError(f"job={job!r}: expected a module name under jobs/, e.g. 'benchmark'")
    if nodes < 1 or gpus_per_node < 0 or (cpus_per_task is not None and cpus_per_task < 1):
        raise ValueError(
            f"nodes={nodes}, gpus_per_node={gpus_per_node}, cpus_per_task={cpus_per_task}: "
            "need nodes >= 1, gpus_per_node >= 0, cpus_per_task >= 1"
        )
    run_dir = os.path.abspath(run_dir)
    for name, value in [("run_dir", run_dir), ("workdir", workdir)]:
        if value is not None and re.search(r"\s", value):
            raise ValueError(f"{name}={value!r}: #SBATCH paths cannot contain whitespace")
    bad = [x for x in extra_sbatch if not x.startswith("-")]
    if bad:
        raise ValueError(f"extra_sbatch={bad!r}: each item is one option, e.g. '--exclusive'")

    if driver_cmd is None:  # Hydra's own files (.hydra/, <job>.log) go to the run dir too
        driver = ["python", "-m", f"jobs.{job}", *overrides, f"run_dir={run_dir}",
                  f"hydra.run.dir={run_dir}"]
    elif isinstance(driver_cmd, str):
        driver = shlex.split(driver_cmd)
    else:
        driver = list(driver_cmd)

    directives = [
        f"--job-name={job_name or f'aligncultura-{job}'}",
        f"--partition={partition}" if partition else None,
        f"--account={account}" if account else None,
        f"--qos={qos}" if qos else None,
        f"--time={time}",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        f"--gpus-per-node={gpus_per_node}" if gpus_per_node else None,
        f"--cpus-per-task={cpus_per_task}" if cpus_per_task else None,
        f"--mem={mem}" if mem else None,
        f"--chdir={workdir}" if workdir else None,
        f"--output={run_dir}/slurm-%j.out",
        f"--error={run_dir}/slurm-%j.err",
        f"--signal={signal}" if signal else None,
        "--requeue" if requeue else "--no-requeue",
        "--open-mode=append" if requeue else None,  # a requeued run appends to the same logs
        *extra_sbatch,
    ]
    values = {
        "sbatch_directives": "\n".join(f"#SBATCH {d}" for d in directives if d),
        "setup_lines": "\n".join(setup) if setup else ":  # none",
        "run_dir": shlex.quote(run_dir),
        "container": " ".join(shlex.quote(w) for w in shlex.split(container or "")),
        "driver": " ".join(shlex.quote(w) for w in driver),
        "requeue": "1" if requeue else "0",
        "ray_bootstrap_home": "1" if ray_bootstrap_home else "0",
        "gpus_per_node": str(gpus_per_node),
    }
    text = Path(template or TEMPLATE).read_text()
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise KeyError(f"{template or TEMPLATE}: no value for placeholders {missing}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def submit(script_text: str, run_dir: str | Path) -> str:
    """Write ``run_dir/sbatch.sh``, submit it with ``sbatch --parsable`` and return the job id."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    script = run_dir / "sbatch.sh"
    script.write_text(script_text)
    script.chmod(0o755)
    try:
        proc = subprocess.run(
            ["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=False
        )
    except FileNotFoundError as e:
        raise RuntimeError(
            "sbatch not found: run this on a Slurm login node "
            "(locally: sudo slurm/setup_local_slurm.sh)"
        ) from e
    if proc.returncode != 0:
        raise RuntimeError(
            f"sbatch {script} failed (exit {proc.returncode}): {proc.stderr.strip()}\n"
            f"fix the options and resubmit with: sbatch {script}"
        )
    return proc.stdout.strip().split(";")[0]  # "<id>" or "<id>;<cluster>"


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """Hydra's multirun expansion: ``["a=1,2", "b=x,y", "c=3"]`` -> 4 override lists (the
    cartesian product, in Hydra's order). Overrides that are not sweeps are kept verbatim."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    choices = []
    for text in overrides:
        o = parser.parse_override(text)
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ValueError(f"{text}: only lists, choice() and range() sweeps are supported")
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(point) for point in itertools.product(*choices)]


def _job_dir_name(i: int, point: Sequence[str], varying: set[int]) -> str:
    label = ",".join(point[k] for k in sorted(varying))
    label = re.sub(r"[^\w.=,+-]", "_", label)[:60]
    return f"{i}_{label}" if label else str(i)


def write_jobs(where: Path, job: str, jobs: list[dict]) -> None:
    """``<where>/jobs.json``: what jobs.status needs to find each job, written atomically."""
    from aligncultura.rundir import write_json

    write_json(where / "jobs.json", {"job": job, "launcher": "aligncultura.cluster.slurm", "jobs": jobs})


def submit_sweep(job: str, overrides: Sequence[str], sweep_dir: str | Path,
                 **render_kwargs) -> list[dict]:
    """Submit one sbatch job per sweep point; return (and write to ``jobs.json``) their records.

    Returns at once: the jobs run without any waiting process. Each job gets
    ``<sweep_dir>/<i>_<varying overrides>/`` as run dir (with its rendered ``sbatch.sh`` and Slurm
    logs). A failed ``sbatch`` raises; the jobs submitted before it stay listed in ``jobs.json``.
    """
    sweep_dir = Path(sweep_dir).resolve()
    points = expand_sweep(overrides)
    varying = {k for k in range(len(overrides)) if len({p[k] for p in points}) > 1}
    jobs: list[dict] = []
    for i, point in enumerate(points):
        run_dir = sweep_dir / _job_dir_name(i, point, varying)
        job_id = submit(render_sbatch(job, point, run_dir=str(run_dir), **render_kwargs), run_dir)
        jobs.append({"num": i, "job_id": job_id, "overrides": point, "run_dir": str(run_dir),
                     "sbatch_script": str(run_dir / "sbatch.sh")})
        write_jobs(sweep_dir, job, jobs)
    return jobs


def main(argv: Sequence[str] | None = None, prog: str = "python -m aligncultura.cluster.slurm") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1 :]

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Submit `python -m jobs.<job> <overrides>` as a multi-node Ray job on Slurm.",
        epilog="Hydra overrides go after `--`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("submit", help="render the sbatch script and submit it")
    p.add_argument("--job", required=True, help="module under jobs/, e.g. benchmark")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--cpus-per-task", type=int)
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--qos")
    p.add_argument("--time", default="04:00:00")
    p.add_argument("--mem", help="e.g. 200G (per node)")
    p.add_argument("--setup", action="append", default=[], help="shell line run first (repeat)")
    p.add_argument("--container", help="prefix, e.g. 'apptainer exec --nv img.sif'")
    p.add_argument("--run-dir", help="default: runs/<job>/<timestamp> under the current dir")
    p.add_argument("--sweep-dir", help="sweeps (overrides like model=a,b): one run dir per job "
                   "under it; default: runs/multirun/<job>/<timestamp>")
    p.add_argument("--signal", default="B:USR2@120", help="'' to leave out")
    p.add_argument("--no-requeue", action="store_true")
    p.add_argument("--sbatch", action="append", default=[], help="extra #SBATCH option (repeat)")
    p.add_argument("--ray-bootstrap-home", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    args = parser.parse_args(argv)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    kwargs = dict(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        time=args.time,
        mem=args.mem,
        setup=args.setup,
        container=args.container,
        signal=args.signal or None,
        requeue=not args.no_requeue,
        extra_sbatch=args.sbatch,
        workdir=os.getcwd(),  # so `sbatch run_dir/sbatch.sh` works from anywhere later
        ray_bootstrap_home=args.ray_bootstrap_home,
    )
    try:
        points = expand_sweep(overrides)
    except Exception as e:  # noqa: BLE001 - Hydra's parser raises several kinds
        print(f"error: bad override: {e}", file=sys.stderr)
        return 2
    if len(points) > 1 or args.sweep_dir:
        sweep_dir = os.path.abspath(args.sweep_dir or os.path.join("runs", "multirun", args.job,
                                                                   stamp))
        if args.dry_run:
            for i, point in enumerate(points):
                print(f"# job {i}: {' '.join(point)}")
            return 0
        jobs = submit_sweep(args.job, overrides, sweep_dir, **kwargs)
        for j in jobs:
            print(f"job_id={j['job_id']} run_dir={j['run_dir']}")
        print(f"sweep_dir={sweep_dir}\nstatus: python -m jobs.status {sweep_dir}")
        return 0
    run_dir = os.path.abspath(args.run_dir or os.path.join("runs", args.job, stamp))
    text = render_sbatch(args.job, overrides, run_dir=run_dir, **kwargs)
    if args.dry_run:
        print(text, end="")
        return 0
    job_id = submit(text, run_dir)
    write_jobs(Path(run_dir), args.job, [{"num": 0, "job_id": job_id, "overrides": overrides,
                                          "run_dir": run_dir,
                                          "sbatch_script": str(Path(run_dir) / "sbatch.sh")}])
    print(f"job_id={job_id}")
    print(f"run_dir={run_dir}")
    print(f"status: python -m jobs.status {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
