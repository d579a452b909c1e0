#!/usr/bin/env bash
# Install and start a real local Slurm (with accounting, so `sacct` works) on this machine: the
# one-node cluster (default), or a two-node cluster whose nodes live in network namespaces.
#
#   sudo slurm/setup_local_slurm.sh            # one node: ~20-30 s from nothing (apt), then a few s
#   sudo slurm/setup_local_slurm.sh            # again: only checks that everything is up (~1 s)
#   sudo slurm/setup_local_slurm.sh --nodes 2  # the two-node cluster (beside the one-node one)
#   export SLURM_CONF=/etc/slurm/two_nodes/slurm.conf   # then sbatch/squeue/sacct... talk to it
#
# For development and CI machines without systemd (containers, sandboxes): every daemon is started
# directly. Safe to re-run: daemons that are already running are left alone (no second copies), and
# config files are rewritten only when their content changes (then the Slurm daemons are restarted).
# Stop everything with slurm/teardown_local_slurm.sh (same --nodes).
#
# Shared by both clusters: munged, MariaDB and one slurmdbd (port 6819, /etc/slurm/slurmdbd.conf);
# each cluster is its own ClusterName in the accounting database.
#
# One node (default, /etc/slurm/slurm.conf): node `localhost` (NodeAddr=127.0.0.1, whatever the
# hostname is), partition `debug` (default), cluster `aligncultura`, slurmctld on port 6817,
# everything runs as root.
#
# Two nodes (--nodes 2, /etc/slurm/two_nodes/slurm.conf; both clusters can run at the same time):
#   bridge `acslurm0` on the host with 10.77.0.1/24 (the controller's address), and two network
#   namespaces `acslurm-n1`, `acslurm-n2`, each joined to it by a veth pair (`veth0` inside, with a
#   default route via 10.77.0.1) and running one slurmd (Debian's slurmd is built with
#   multiple-slurmd support: `nsenter --net=/run/netns/acslurm-n1 slurmd -N n1`):
#     NodeName=n1 NodeAddr=10.77.0.2    NodeName=n2 NodeAddr=10.77.0.3
#   partition `debug` (default) = n[1-2], cluster `aligncultura2n`, slurmctld on the host (port
#   6827, state/pid/log files with `-2n` in their names), slurmd on port 6828; slurmd spool, pid and
#   log files per node (`%n`: /var/spool/slurmd-2n/n1, /run/slurmd-2n-n1.pid, slurmd-2n-n1.log).
#   Each node declares all of this machine's CPUs (the two nodes share them). Jobs run the same
#   filesystem, users, /tmp and munge socket as the host; only the network is per node, so Ray on
#   n1 binds 10.77.0.2 and a Ray worker on n2 reaches it over the bridge. Needs root and network
#   namespaces (iproute2 is installed if missing).
#
# Environment knobs:
#   SLURM_CLUSTER_NAME   (default: aligncultura; the two-node cluster appends "2n")
#   SLURM_WAIT_S         seconds to wait for the nodes and sacct (default: 60)
#   SLURM_REAL_MEMORY_MB override RealMemory (default: 90% of MemAvailable, fixed on first write)
set -euo pipefail

NODES=1
while (( $# )); do
  case $1 in
    --nodes) NODES=${2:-}; shift 2 || { echo "setup_local_slurm: --nodes needs 1 or 2" >&2; exit 2; } ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_local_slurm: unknown argument $1 (usage: $0 [--nodes 1|2])" >&2; exit 2 ;;
  esac
done
[[ $NODES == 1 || $NODES == 2 ]] || { echo "setup_local_slurm: --nodes must be 1 or 2" >&2; exit 2; }

CLUSTER=${SLURM_CLUSTER_NAME:-aligncultura}
WAIT_S=${SLURM_WAIT_S:-60}
ETC=/etc/slurm
ETC2=/etc/slurm/two_nodes
LOGDIR=/var/log/slurm
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=aligncultura-local-slurm   # local MariaDB reachable through its unix socket only
MARKER="# written by aligncultura slurm/setup_local_slurm.sh"
# the two-node network
BRIDGE=acslurm0
NET=10.77.0          # host 10.77.0.1, node i 10.77.0.(i+1)
NODE_NAMES=(n1 n2)
T0=$EPOCHREALTIME

log() { printf '[setup_local_slurm %5.1fs] %s\n' "$(awk "BEGIN{print $EPOCHREALTIME - $T0}")" "$*"; }
die() { printf 'setup_local_slurm: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts daemons as root)"

if (( NODES == 2 )); then
  CONF=$ETC2/slurm.conf
  CLUSTER=${CLUSTER}2n
else
  CONF=$ETC/slurm.conf
fi
export SLURM_CONF=$CONF   # every Slurm command below talks to this cluster

# ---------------------------------------------------------------- 1. packages
PKGS=(slurm-wlm munge slurmdbd mariadb-server)
BINS=(slurmctld slurmd slurmdbd munged mariadbd sacct sacctmgr)
if (( NODES == 2 )); then PKGS+=(iproute2); BINS+=(ip); fi
need_install=0
for bin in "${BINS[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || need_install=1
done
if (( need_install )); then
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show "${PKGS[@]}" >/dev/null 2>&1; then
    log "apt-get update (packages not in the apt lists yet)"
    apt-get update -qq
  fi
  # No init system here: keep the packages' postinst scripts from trying to start services.
  temp_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    temp_policy=1
  fi
  log "apt-get install ${PKGS[*]}"
  apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/tmp/setup_local_slurm.apt.log 2>&1 \
    || { tail -30 /tmp/setup_local_slurm.apt.log >&2; die "apt-get install failed (log above)"; }
  (( temp_policy )) && rm -f /usr/sbin/policy-rc.d
  log "packages installed"
fi

# ---------------------------------------------------------------- 2. config files
mkdir -p "$ETC" "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd /run/munge /run/mysqld
(( NODES == 2 )) && mkdir -p "$ETC2" /var/spool/slurmctld-2n \
  "${NODE_NAMES[@]/#//var/spool/slurmd-2n/}"

changed=()
write_if_changed() {  # write_if_changed PATH MODE  (content on stdin); records PATH in $changed
  local path=$1 mode=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $path ]] && cmp -s "$tmp" "$path"; then rm -f "$tmp"; return 0; fi
  install -m "$mode" "$tmp" "$path" && rm -f "$tmp"
  changed+=("$path")
  log "wrote $path"
}

cpus=$(nproc)
if [[ -n ${SLURM_REAL_MEMORY_MB:-} ]]; then
  mem_mb=$SLURM_REAL_MEMORY_MB
elif [[ -f $CONF ]] && grep -qF "$MARKER" "$CONF"; then
  # keep the value from the first run: free memory fluctuates, and a new value would restart Slurm
  mem_mb=$(sed -n 's/^NodeName=.*RealMemory=\([0-9]*\).*/\1/p' "$CONF" | head -n 1)
fi
if [[ -z ${mem_mb:-} ]]; then
  avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
  mem_mb=$(( avail_kb * 9 / 10 / 1024 ))
fi

# settings both clusters share (the one-node file keeps the layout it always had: an unchanged
# file does not restart its daemons)
common_conf_head() {
  cat <<EOF
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# step credentials live 15 s (default 120): Slurm holds a requeued (preempted) job until the
# credential of its previous run has expired, so it restarts after ~15 s instead of ~2 min
AuthInfo=cred_expire=15
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# trust the node description below (containers often report other topology than nproc)
SlurmdParameters=config_overrides
ReturnToService=2
EOF
}
common_conf_tail() {
  cat <<EOF
SchedulerType=sched/backfill
# one small node: look at pending jobs every 2 s (defaults 60 s / 30 s), so a requeued job whose
# hold just expired starts at once
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
# cores are consumable; memory is not (jobs without --mem would otherwise take the whole node)
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
# keep finished jobs visible to squeue/scontrol for 5 minutes (sacct keeps them forever)
MinJobAge=300
EOF
}

if (( NODES == 1 )); then
  write_if_changed "$CONF" 644 <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
$(common_conf_head)
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
$(common_conf_tail)
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
else
  # "localhost" always matches the controller's own host name; clients and the slurmds in the
  # namespaces reach it at the bridge address
  write_if_changed "$CONF" 644 <<EOF
$MARKER (--nodes 2)
ClusterName=$CLUSTER
SlurmctldHost=localhost($NET.1)
SlurmctldPort=6827
SlurmdPort=6828
$(common_conf_head)
SlurmctldPidFile=/run/slurmctld-2n.pid
SlurmdPidFile=/run/slurmd-2n-%n.pid
SlurmdSpoolDir=/var/spool/slurmd-2n/%n
StateSaveLocation=/var/spool/slurmctld-2n
SlurmctldLogFile=$LOGDIR/slurmctld-2n.log
SlurmdLogFile=$LOGDIR/slurmd-2n-%n.log
$(common_conf_tail)
NodeName=n1 NodeAddr=$NET.2 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
NodeName=n2 NodeAddr=$NET.3 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
fi

# Not read with the plugins above (no cgroup proctrack/task plugin); here so that switching to them
# does not also require writing this file.
write_if_changed "$(dirname "$CONF")/cgroup.conf" 644 <<EOF
$MARKER
CgroupPlugin=autodetect
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF

# slurmdbd refuses a config readable by others
write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOGDIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$DB_PASS
EOF

# ---------------------------------------------------------------- 3. shared daemons
running() { pgrep -x "$1" >/dev/null 2>&1; }
# a Slurm daemon of THIS cluster: both clusters run slurmctld/slurmd, so go by the pid file
alive() {  # alive NAME PIDFILE
  local pid
  pid=$(cat "$2" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2 i; shift 2
  for (( i = 0; i < limit * 5; i++ )); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
  local pid
  alive "$1" "$2" || return 0
  pid=$(cat "$2")
  log "config changed: stopping $1 (pid $pid)"
  kill "$pid"
  wait_for 15 "$1 exit" bash -c "! kill -0 $pid" || die "$1 (pid $pid) did not stop"
}

# munge: the key is created by the package's postinst; create it if it is missing
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null
  else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
fi
chown munge:munge /etc/munge/munge.key /run/munge && chmod 400 /etc/munge/munge.key
if ! running munged; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
fi
wait_for 10 munge bash -c 'munge -n | unmunge' || die "munged does not answer (try: munge -n | unmunge)"

# MariaDB (the package initialised /var/lib/mysql when it was installed)
chown mysql:mysql /run/mysqld
if ! running mariadbd; then
  log "starting mariadbd"
  setsid /usr/sbin/mariadbd --user=mysql --innodb-lock-wait-timeout=900 \
    </dev/null >>/var/log/mysql-aligncultura.log 2>&1 &
fi
wait_for 30 mariadb mariadb-admin ping \
  || die "mariadbd did not come up in 30 s: see /var/log/mysql-aligncultura.log"
mariadb -u root <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF

# a changed config only takes effect after a restart (running jobs survive it)
conf_changed=0
[[ " ${changed[*]} " == *" $CONF "* || " ${changed[*]} " == *" $(dirname "$CONF")/cgroup.conf "* ]] \
  && conf_changed=1
[[ " ${changed[*]} " == *" $ETC/slurmdbd.conf "* ]] && stop_pidfile slurmdbd /run/slurmdbd.pid

if ! alive slurmdbd /run/slurmdbd.pid; then
  log "starting slurmdbd"
  SLURM_CONF=$ETC/slurm.conf slurmdbd   # it reads slurmdbd.conf beside SLURM_CONF
fi
wait_for 30 slurmdbd sacctmgr -n list cluster \
  || die "slurmdbd does not answer sacctmgr in 30 s: see $LOGDIR/slurmdbd.log"
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
  log "sacctmgr add cluster $CLUSTER"
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# ---------------------------------------------------------------- 4. the cluster's own daemons
if (( NODES == 1 )); then
  NODE_LIST=(localhost)
  if (( conf_changed )); then
    stop_pidfile slurmd /run/slurmd.pid
    stop_pidfile slurmctld /run/slurmctld.pid
  fi
  if ! alive slurmctld /run/slurmctld.pid; then
    log "starting slurmctld"
    slurmctld
  fi
  if ! alive slurmd /run/slurmd.pid; then
    log "starting slurmd -N localhost"
    slurmd -N localhost
  fi
else
  NODE_LIST=("${NODE_NAMES[@]}")
  # the network: host side of the bridge = the controller's address
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE ($NET.1/24)"
    ip link add "$BRIDGE" type bridge || die "cannot create a bridge (ip link add $BRIDGE type bridge)"
  fi
  # (no `| grep -q` under pipefail: grep's early exit can fail the pipeline)
  [[ $(ip addr show dev "$BRIDGE") == *" $NET.1/24 "* ]] || ip addr add "$NET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  for i in "${!NODE_NAMES[@]}"; do
    node=${NODE_NAMES[$i]} ns=acslurm-${NODE_NAMES[$i]} addr=$NET.$(( i + 2 ))
    if ! ip netns exec "$ns" true 2>/dev/null; then
      ip netns del "$ns" 2>/dev/null || true
      log "creating network namespace $ns ($addr, node $node)"
      ip netns add "$ns" || die "cannot create network namespace $ns (ip netns add)"
    fi
    # the host end of the veth pair carries the namespace's name (<= 15 characters)
    if ! ip link show "$ns" >/dev/null 2>&1; then
      ip netns exec "$ns" ip link del veth0 2>/dev/null || true
      ip link add "$ns" type veth peer name veth0 netns "$ns" \
        || die "cannot create a veth pair into $ns"
    fi
    ip link set "$ns" master "$BRIDGE" up
    ip netns exec "$ns" ip link set lo up
    [[ $(ip netns exec "$ns" ip addr show dev veth0) == *" $addr/24 "* ]] \
      || ip netns exec "$ns" ip addr add "$addr/24" dev veth0
    ip netns exec "$ns" ip link set veth0 up
    # a default route: programs that find "their" address by routing towards the internet
    # (Ray does) pick veth0's address, as on a real node; nothing is forwarded beyond the host
    ip netns exec "$ns" ip route replace default via "$NET.1" dev veth0
  done
  if (( conf_changed )); then
    for node in "${NODE_NAMES[@]}"; do stop_pidfile slurmd "/run/slurmd-2n-$node.pid"; done
    stop_pidfile slurmctld /run/slurmctld-2n.pid
  fi
  if ! alive slurmctld /run/slurmctld-2n.pid; then
    log "starting slurmctld (two-node cluster $CLUSTER, $NET.1:6827)"
    slurmctld -f "$CONF"
  fi
  for node in "${NODE_NAMES[@]}"; do
    wait_for 15 "the controller" ip netns exec "acslurm-$node" \
      bash -c "exec 3<>/dev/tcp/$NET.1/6827" || die "namespace acslurm-$node cannot reach \
slurmctld at $NET.1:6827 over $BRIDGE (see $LOGDIR/slurmctld-2n.log)"
  done
  for node in "${NODE_NAMES[@]}"; do
    if ! alive slurmd "/run/slurmd-2n-$node.pid"; then
      log "starting slurmd -N $node in network namespace acslurm-$node"
      # nsenter, not `ip netns exec`: that also remounts /sys, without /sys/fs/cgroup (slurmd needs it)
      nsenter --net="/run/netns/acslurm-$node" slurmd -f "$CONF" -N "$node"
    fi
  done
fi

# ---------------------------------------------------------------- 5. wait until usable
node_state() { sinfo -h -N -n "$1" -o %t 2>/dev/null | head -n 1; }
node_ok() {
  local state
  state=$(node_state "$1") || return 1
  # idle, or busy with someone's jobs when re-run (mix/alloc/comp): all mean the node is up
  [[ $state == idle || $state == mix || $state == alloc || $state == comp ]]
}
deadline=$(( $(date +%s) + WAIT_S ))
for node in "${NODE_LIST[@]}"; do
  resumed=0
  until node_ok "$node"; do
    state=$(node_state "$node" || true)
    state=${state:-unreachable}
    if [[ $state == drain* || $state == down* ]] && (( ! resumed )); then
      # e.g. "Node unexpectedly rebooted" after restarting slurmd: bring it back once
      scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
      resumed=1
    fi
    if (( $(date +%s) > deadline )); then
      if (( NODES == 1 )); then logs="$LOGDIR/slurmctld.log, $LOGDIR/slurmd.log"
      else logs="$LOGDIR/slurmctld-2n.log, $LOGDIR/slurmd-2n-$node.log"; fi
      die "node '$node' is not idle after ${WAIT_S}s (state: $state; reason: \
$(sinfo -h -N -n "$node" -o %E 2>/dev/null)). Logs: $logs"
    fi
    sleep 0.5
  done
done
until sacct -n -X -P -S now-1hours --format=JobID >/dev/null 2>&1; do
  (( $(date +%s) > deadline )) && die "sacct does not work after ${WAIT_S}s: \
$(sacct -n -X 2>&1 | head -3). Logs: $LOGDIR/slurmdbd.log"
  sleep 0.5
done
if (( NODES == 1 )); then
  log "Slurm is up: node localhost $(sinfo -h -N -n localhost -o '%t cpus=%c mem=%mMB'), \
partition debug, cluster $CLUSTER, sacct ok"
else
  log "Slurm is up: nodes $(sinfo -h -N -o '%N=%t' | sort | tr '\n' ' ')(cpus=$cpus each, \
$NET.2-3 in namespaces acslurm-n1/n2), partition debug, cluster $CLUSTER, sacct ok; \
use it with: export SLURM_CONF=$CONF"
fi
