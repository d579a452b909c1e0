#!/usr/bin/env bash
# Stop the daemons started by slurm/setup_local_slurm.sh (in reverse order), by the PIDs in their
# pid files. Packages, config, the accounting database and job history stay: setup_local_slurm.sh
# brings everything back in a few seconds. Running jobs are killed with the node.
#   sudo slurm/teardown_local_slurm.sh            # slurmd, slurmctld, slurmdbd, mariadbd, munged
#   KEEP_DB=1 sudo slurm/teardown_local_slurm.sh  # leave mariadbd and munged running
set -uo pipefail

stop() {  # stop NAME PIDFILE
  local name=$1 pidfile=$2 pid i
  pid=$(cat "$pidfile" 2>/dev/null) || { echo "$name: not running (no $pidfile)"; return 0; }
  if ! kill -0 "$pid" 2>/dev/null; then echo "$name: not running (stale $pidfile)"; return 0; fi
  kill "$pid"
  for (( i = 0; i < 150; i++ )); do
    kill -0 "$pid" 2>/dev/null || { echo "$name: stopped (pid $pid)"; return 0; }
    sleep 0.2
  done
  echo "$name: pid $pid still running after 30 s; sending SIGKILL" >&2
  kill -9 "$pid" 2>/dev/null
}

stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop slurmdbd /run/slurmdbd.pid
if [[ -z ${KEEP_DB:-} ]]; then
  stop mariadbd /run/mysqld/mysqld.pid
  stop munged /run/munge/munged.pid
fi
