"""What every job shell shares: the command-line wrapper (one-line errors, exit 2) and the
precheck of presets and keys before Hydra runs. Only `jobs/` imports it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aligncultura.errors import InputError, JobError
from aligncultura.rundir import SECRET_VALUE, redact_hydra_files


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
        from aligncultura import rundir, runlog

        redact_hydra_files()
        rundir._CONSOLE.append(True)  # start_run sends the libraries' lines to logs/
        try:
            return run(cfg)
        except user_errors() as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: {printable(SECRET_VALUE.sub('***', msg))}", file=sys.stderr,
                  flush=True)
            sys.exit(2)
        finally:
            rundir._CONSOLE.clear()
            runlog.restore()

    return main


def printable(text: str) -> str:
    """Control characters (NUL, escape sequences, a UTF-16 file read as bytes, ...) shown as
    escapes, never sent raw to the terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode()
                   for ch in text)


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
