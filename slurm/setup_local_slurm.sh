#!/usr/bin/env bash
# Install and start a real single-node Slurm (with accounting, so `sacct` works) on this machine.
#
#   sudo slurm/setup_local_slurm.sh          # from nothing: ~20-30 s (apt) + a few s (daemons)
#   sudo slurm/setup_local_slurm.sh          # again: only checks that everything is up (~1 s)
#
# For development and CI machines without systemd (containers, sandboxes): every daemon is started
# directly. Safe to re-run: daemons that are already running are left alone (no second copies), and
# config files are rewritten only when their content changes (then the Slurm daemons are restarted).
# Stop everything with slurm/teardown_local_slurm.sh.
#
# Layout: one node named `localhost` (NodeAddr=127.0.0.1, whatever the hostname is), partition
# `debug` (default), everything runs as root, accounting through slurmdbd + MariaDB on localhost.
# Environment knobs:
#   SLURM_CLUSTER_NAME   (default: aligncultura)
#   SLURM_WAIT_S         seconds to wait for the node and sacct (default: 60)
#   SLURM_REAL_MEMORY_MB override RealMemory (default: 90% of MemAvailable, fixed on first write)
set -euo pipefail

CLUSTER=${SLURM_CLUSTER_NAME:-aligncultura}
WAIT_S=${SLURM_WAIT_S:-60}
ETC=/etc/slurm
LOGDIR=/var/log/slurm
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=aligncultura-local-slurm   # local MariaDB reachable through its unix socket only
MARKER="# written by aligncultura slurm/setup_local_slurm.sh"
T0=$EPOCHREALTIME

log() { printf '[setup_local_slurm %5.1fs] %s\n' "$(awk "BEGIN{print $EPOCHREALTIME - $T0}")" "$*"; }
die() { printf 'setup_local_slurm: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts daemons as root)"

# ---------------------------------------------------------------- 1. packages
PKGS=(slurm-wlm munge slurmdbd mariadb-server)
need_install=0
for bin in slurmctld slurmd slurmdbd munged mariadbd sacct sacctmgr; do
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
elif [[ -f $ETC/slurm.conf ]] && grep -qF "$MARKER" "$ETC/slurm.conf"; then
  # keep the value from the first run: free memory fluctuates, and a new value would restart Slurm
  mem_mb=$(sed -n 's/^NodeName=.*RealMemory=\([0-9]*\).*/\1/p' "$ETC/slurm.conf")
fi
if [[ -z ${mem_mb:-} ]]; then
  avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
  mem_mb=$(( avail_kb * 9 / 10 / 1024 ))
fi

write_if_changed "$ETC/slurm.conf" 644 <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
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
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
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
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

# Not read with the plugins above (no cgroup proctrack/task plugin); here so that switching to them
# does not also require writing this file.
write_if_changed "$ETC/cgroup.conf" 644 <<EOF
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

# ---------------------------------------------------------------- 3. daemons
running() { pgrep -x "$1" >/dev/null 2>&1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2 i; shift 2
  for (( i = 0; i < limit * 5; i++ )); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
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
restart=()
[[ " ${changed[*]} " == *" $ETC/slurm.conf "* || " ${changed[*]} " == *" $ETC/cgroup.conf "* ]] \
  && restart+=(slurmd slurmctld)
[[ " ${changed[*]} " == *" $ETC/slurmdbd.conf "* ]] && restart+=(slurmdbd)
if (( ${#restart[@]} )); then
  for d in "${restart[@]}"; do
    pidfile=/run/$d.pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      log "config changed: stopping $d (pid $pid)"
      kill "$pid"
      wait_for 15 "$d exit" bash -c "! kill -0 $pid" || die "$d (pid $pid) did not stop"
    fi
  done
fi

if ! running slurmdbd; then
  log "starting slurmdbd"
  slurmdbd
fi
wait_for 30 slurmdbd sacctmgr -n list cluster \
  || die "slurmdbd does not answer sacctmgr in 30 s: see $LOGDIR/slurmdbd.log"
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
  log "sacctmgr add cluster $CLUSTER"
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

if ! running slurmctld; then
  log "starting slurmctld"
  slurmctld
fi
if ! running slurmd; then
  log "starting slurmd -N localhost"
  slurmd -N localhost
fi

# ---------------------------------------------------------------- 4. wait until usable
node_ok() {
  local state
  state=$(sinfo -h -N -n localhost -o %t 2>/dev/null) || return 1
  # idle, or busy with someone's jobs when re-run (mix/alloc/comp): all mean the node is up
  [[ $state == idle || $state == mix || $state == alloc || $state == comp ]]
}
deadline=$(( $(date +%s) + WAIT_S ))
resumed=0
until node_ok; do
  state=$(sinfo -h -N -n localhost -o %t 2>/dev/null || echo "unreachable")
  if [[ $state == drain* || $state == down* ]] && (( ! resumed )); then
    # e.g. "Node unexpectedly rebooted" after restarting slurmd: bring it back once
    scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
    resumed=1
  fi
  if (( $(date +%s) > deadline )); then
    die "node 'localhost' is not idle after ${WAIT_S}s (state: $state; reason: \
$(sinfo -h -N -n localhost -o %E 2>/dev/null)). Logs: $LOGDIR/slurmctld.log, $LOGDIR/slurmd.log"
  fi
  sleep 0.5
done
until sacct -n -X -P -S now-1hours --format=JobID >/dev/null 2>&1; do
  (( $(date +%s) > deadline )) && die "sacct does not work after ${WAIT_S}s: \
$(sacct -n -X 2>&1 | head -3). Logs: $LOGDIR/slurmdbd.log"
  sleep 0.5
done
log "Slurm is up: node localhost $(sinfo -h -N -n localhost -o '%t cpus=%c mem=%mMB'), \
partition debug, cluster $CLUSTER, sacct ok"
