"""What every job shell shares: the command-line wrapper (one-line errors, exit 2), the
precheck of presets and keys before Hydra runs, and the run directory set-up."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aligncultura.errors import InputError, JobError
from aligncultura.rundir import SECRET_VALUE, RunDir


def user_errors() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import OmegaConfBaseException

    from aligncultura.data.taxonomy import TaxonomyError
    from aligncultura.engine.models import ModelError

    return (JobError, InputError, ModelError, TaxonomyError, OmegaConfBaseException,
            FileNotFoundError, PermissionError)


def cli(run: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a job's `run(cfg)` for the command line: a user error is one line and exit 2."""

    @functools.wraps(run)
    def main(cfg: Any) -> Any:
        redact_hydra_files()
        try:
            return run(cfg)
        except user_errors() as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: {SECRET_VALUE.sub('***', msg)}", file=sys.stderr, flush=True)
            sys.exit(2)

    return main


def resolve_run_dir(cfg: Any, job: str) -> RunDir:
    """`run_dir=PATH` when given, else Hydra's job output dir (one per multirun job)."""
    if cfg.get("run_dir"):
        return RunDir(cfg.run_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return RunDir(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return RunDir(Path("runs") / job / time.strftime("%Y-%m-%d_%H-%M-%S"))


def start_run(cfg: Any, job: str, input_files: Iterable[str]) -> RunDir:
    from omegaconf import OmegaConf

    rd = resolve_run_dir(cfg, job)
    rd.write_config(OmegaConf.to_container(cfg, resolve=True))
    rd.write_manifest(job, sorted(set(input_files)))
    redact_hydra_files()
    return rd


def redact_hydra_files() -> None:
    """Hydra writes the overrides and the config as typed into `<output dir>/.hydra/` (and a
    multirun's `multirun.yaml`): mask secret-looking keys and values there too."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return
    import yaml

    from aligncultura.rundir import atomic_write_bytes, redact

    files = list((Path(hc.runtime.output_dir) / hc.output_subdir).glob("*.yaml")) \
        if hc.output_subdir else []
    if hc.sweep.dir:
        files.append(Path(hc.sweep.dir) / "multirun.yaml")
    for f in files:
        try:
            data = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if redact(data) != data:
            atomic_write_bytes(f, yaml.safe_dump(redact(data), sort_keys=False).encode())


def check_presets(conf_dir: Path, groups: Iterable[str], argv: list[str] | None = None) -> None:
    """Catch `group=name` overrides naming no preset before Hydra does: one line, exit 2."""
    for arg in (sys.argv[1:] if argv is None else argv):
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in groups:
            continue
        for name in value.split(","):  # multirun lists
            if name and name != "null" and not (conf_dir / key / f"{name}.yaml").exists():
                available = ", ".join(sorted(p.stem for p in (conf_dir / key).glob("*.yaml")))
                print(f"error: {key}={name}: no such preset in {conf_dir / key}; available: "
                      f"{available}", file=sys.stderr)
                sys.exit(2)


def precheck(conf_dir: Path, config_name: str, groups: Iterable[str]) -> None:
    """Validate the command line before Hydra runs the job: a bad preset name, a typo in a
    key or a value of the wrong type is one line on stderr and exit 2 (not a stack trace)."""
    check_presets(conf_dir, groups)
    args = sys.argv[1:]
    if any(a.startswith("-") for a in args):  # --multirun, --cfg, --help: Hydra's own paths
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [a for a in args if not a.lstrip("+~").startswith("hydra")]
    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except Exception as exc:  # noqa: BLE001 - every composition error is a user error here
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        if exc.__cause__ is not None:
            lines += [x.strip() for x in str(exc.__cause__).splitlines()[:1] if x.strip()]
        msg = SECRET_VALUE.sub("***", " ".join(dict.fromkeys(lines[:3]))[:400]) or type(exc).__name__
        print(f"error: {msg} (see `python -m jobs.{config_name} --cfg job` for the keys)",
              file=sys.stderr)
        sys.exit(2)
    finally:
        GlobalHydra.instance().clear()
