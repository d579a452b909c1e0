#!/usr/bin/env bash
# Stop the daemons started by slurm/setup_local_slurm.sh (in reverse order), by the PIDs in their
# pid files. Packages, config, the accounting database and job history stay: setup_local_slurm.sh
# brings everything back in a few seconds.
#   sudo slurm/teardown_local_slurm.sh            # one node: slurmd, slurmctld, then the shared
#                                                 # slurmdbd, mariadbd, munged
#   sudo slurm/teardown_local_slurm.sh --nodes 2  # the two-node cluster: cancels its jobs, stops
#                                                 # its slurmds and slurmctld, ends what is left in
#                                                 # its namespaces, removes them and the bridge,
#                                                 # then the shared daemons
#   KEEP_DB=1 sudo slurm/teardown_local_slurm.sh  # leave mariadbd and munged running
# The shared daemons (slurmdbd, mariadbd, munged) keep running while the other cluster is up.
# One node: running jobs' processes are not waited for (slurmstepd outlives slurmd).
set -uo pipefail

NODES=1
case ${1:-} in
  "") ;;
  --nodes) NODES=${2:-} ;;
  --nodes=*) NODES=${1#--nodes=} ;;
  *) echo "usage: $0 [--nodes 1|2]" >&2; exit 2 ;;
esac
[[ $NODES == 1 || $NODES == 2 ]] || { echo "teardown_local_slurm: --nodes must be 1 or 2" >&2; exit 2; }

CONF2=/etc/slurm/two_nodes/slurm.conf
BRIDGE=acslurm0
NODE_NAMES=(n1 n2)

alive() {  # alive NAME PIDFILE: the pid file names a running NAME
  local pid
  pid=$(cat "$2" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]
}

stop() {  # stop NAME PIDFILE [LABEL]
  local name=$1 pidfile=$2 pid i
  pid=$(cat "$pidfile" 2>/dev/null) || { echo "${3:-$name}: not running (no $pidfile)"; return 0; }
  if ! alive "$name" "$pidfile"; then echo "${3:-$name}: not running (stale $pidfile)"; return 0; fi
  name=${3:-$name}
  kill "$pid"
  for (( i = 0; i < 150; i++ )); do
    kill -0 "$pid" 2>/dev/null || { echo "$name: stopped (pid $pid)"; return 0; }
    sleep 0.2
  done
  echo "$name: pid $pid still running after 30 s; sending SIGKILL" >&2
  kill -9 "$pid" 2>/dev/null
}

stop_shared() {
  local other=$1 other_pidfile=$2
  if alive slurmctld "$other_pidfile"; then
    echo "shared daemons (slurmdbd, mariadbd, munged): kept, the $other cluster is running"
    return 0
  fi
  stop slurmdbd /run/slurmdbd.pid
  if [[ -z ${KEEP_DB:-} ]]; then
    stop mariadbd /run/mysqld/mysqld.pid
    stop munged /run/munge/munged.pid
  fi
}

if (( NODES == 1 )); then
  stop slurmd /run/slurmd.pid
  stop slurmctld /run/slurmctld.pid
  stop_shared two-node /run/slurmctld-2n.pid
  exit 0
fi

# ---- two nodes
if alive slurmctld /run/slurmctld-2n.pid; then
  # its jobs first, so that their steps (Ray, the driver) end the Slurm way
  jobs=$(SLURM_CONF=$CONF2 squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [[ -n ${jobs// } ]]; then
    echo "two-node cluster: cancelling jobs $jobs"
    # shellcheck disable=SC2086
    SLURM_CONF=$CONF2 scancel $jobs
    for (( i = 0; i < 60; i++ )); do
      [[ -z $(SLURM_CONF=$CONF2 squeue -h -t R,CG,PD -o %A 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
fi
for node in "${NODE_NAMES[@]}"; do stop slurmd "/run/slurmd-2n-$node.pid" "slurmd $node"; done
stop slurmctld /run/slurmctld-2n.pid "slurmctld (two nodes)"

# whatever the cluster started and is still there (a job's step daemons, an orphaned Ray worker):
# every process inside its namespaces, by pid, TERM then KILL
for node in "${NODE_NAMES[@]}"; do
  ns=acslurm-$node
  ip netns exec "$ns" true 2>/dev/null || continue
  pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
  if [[ -n ${pids// } ]]; then
    echo "$ns: ending leftover processes $pids"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null
    for (( i = 0; i < 50; i++ )); do
      [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
      sleep 0.2
    done
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    # shellcheck disable=SC2086
    [[ -n ${pids// } ]] && { echo "$ns: SIGKILL $pids"; kill -KILL $pids 2>/dev/null; sleep 0.5; }
  fi
  ip link del "$ns" 2>/dev/null   # the host end of its veth pair (the other end goes with it)
  ip netns del "$ns" && echo "$ns: network namespace removed"
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE" && echo "$BRIDGE: bridge removed"
stop_shared one-node /run/slurmctld.pid
exit 0
