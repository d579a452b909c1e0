"""Joining Ray: the cluster named by RAY_ADDRESS (Slurm, `ray job submit`), else a local Ray
on loopback for this job alone."""

from __future__ import annotations

import os
import signal
import socket
import threading

from aligncultura.errors import JobError


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to RAY_ADDRESS (Slurm, `ray job submit`) or start a local Ray on loopback."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # a local Ray serves this job alone: keep every Ray server (GCS, raylet, workers,
        # agents) on loopback; otherwise Ray binds its gRPC servers to all interfaces, and
        # with RAY_AUTH_MODE=disabled anyone on the network could submit work to it
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return
    if address:
        check_reachable(address)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env = {"env_vars": {"RAY_AUTH_MODE": "disabled"}}
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # a `ray job submit` entrypoint: the job's
        env = None  # runtime env applies; Ray refuses to merge two that set the same variable
    # ray.init replaces the driver's SIGTERM handler with sys.exit: keep the job's own
    # (jobkit.guard_signals flushes and records the interruption), or Slurm's preemption
    # SIGTERM would end the job without saying how to resume
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    from aligncultura.console import logs as runlog

    # the workers' own lines reach this terminal only when the run is verbose; otherwise Ray
    # keeps them in its session logs and engine replicas write theirs to the run dir's logs/
    to_driver = runlog.verbose()
    runlog.capture_loggers()  # Ray's own INFO lines ("Started a local Ray instance")
    try:
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=to_driver)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=env,
                     log_to_driver=to_driver, _node_ip_address="127.0.0.1")
        if not to_driver:
            import ray.data  # noqa: F401 - it installs its console handler when imported

            runlog.capture_loggers()
    except SystemExit as exc:  # SIGTERM while Ray was starting: Ray's handler exits
        if callable(sigterm) and exc.code == signal.SIGTERM:
            sigterm(signal.SIGTERM, None)
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. "node timed out during startup" (overload)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        where = f"connect to Ray at RAY_ADDRESS={address}" if address else "start a local Ray"
        raise JobError(f"could not {where} ({type(exc).__name__}: {first}); rerun the "
                       "same command (finished rows are cached), or use engine=local to run "
                       "without Ray") from None
    finally:
        if callable(sigterm):
            signal.signal(signal.SIGTERM, sigterm)


CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A ``host:port`` RAY_ADDRESS whose GCS does not accept a connection is a one-line error
    within `timeout` (ray.init itself retries for minutes). Other forms (``auto``, ``ray://``)
    are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address or not host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise JobError(f"RAY_ADDRESS={address}: no Ray cluster answers there within "
                       f"{timeout:g} s ({type(exc).__name__}: {exc}); start the cluster (or "
                       "unset RAY_ADDRESS for a local Ray)") from None
