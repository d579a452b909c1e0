#!/bin/bash
# Rendered by aligncultura/cluster/slurm.py from slurm/ray_job.sbatch.tmpl (edit the template, not this file).
# Boots a Ray cluster over the allocation (Ray's "Deploying on Slurm" pattern: one `ray start --block`
# srun step for the head on the first node, one for the workers on the others), runs the driver on
# the batch node with RAY_ADDRESS exported, then stops this job's Ray and exits with the driver's code.
# Resubmit a failed run with: sbatch /scratch/aligncultura/runs/benchmark-4x8/sbatch.sh
#SBATCH --job-name=aligncultura-benchmark
#SBATCH --partition=gpu
#SBATCH --account=proj123
#SBATCH --qos=high
#SBATCH --time=08:00:00
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --mem=480G
#SBATCH --output=/scratch/aligncultura/runs/benchmark-4x8/slurm-%j.out
#SBATCH --error=/scratch/aligncultura/runs/benchmark-4x8/slurm-%j.err
#SBATCH --signal=B:USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --exclusive

set -uo pipefail

# ---- environment setup (module loads, venv/conda activation)
module load cuda/12.4
source /opt/venvs/aligncultura/bin/activate

RUN_DIR=/scratch/aligncultura/runs/benchmark-4x8
CONTAINER=()  # prefix for every ray/python command (empty: none)
DRIVER=(python -m jobs.benchmark model=llama_3_1_8b_instruct judge=prometheus '+tag='"'"'4x8 run'"'"'' run_dir=/scratch/aligncultura/runs/benchmark-4x8 hydra.run.dir=/scratch/aligncultura/runs/benchmark-4x8)
REQUEUE_ON_USR2=1
RAY_BOOTSTRAP_HOME=0
RAY_START_TIMEOUT=${RAY_START_TIMEOUT:-180}

log() { echo "[ray_job $(date +%H:%M:%S)] $*"; }
mkdir -p "$RUN_DIR"
log "job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST}, run dir ${RUN_DIR}"

# the head runs on the node running this script, so its readiness file below is local
HEAD_NODE=${SLURMD_NODENAME:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}

# ---- per-job Ray settings: two jobs on one node must not share a port or a temp dir, nor two
# nodes of one job that share a /tmp (several slurmds on one host): one temp dir per node,
# /tmp/ray_<job>/<node> (short: AF_UNIX socket paths are limited to 107 characters)
N_NODES=${SLURM_JOB_NUM_NODES:-1}
PORT_OFFSET=$(( SLURM_JOB_ID % 1000 ))
RAY_PORT=$(( 6379 + PORT_OFFSET ))
RAY_TMP_JOB=/tmp/ray_${SLURM_JOB_ID}
RAY_TMP=$RAY_TMP_JOB/${HEAD_NODE%%.*}  # the head's; each worker's is set on its node
RAY_CPUS=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}
RAY_GPUS=8
RAY_NODE_ARGS=(--block --num-cpus="$RAY_CPUS" --num-gpus="$RAY_GPUS"
  --dashboard-agent-listen-port=$(( 52365 + PORT_OFFSET )))
# (Ray's default worker ports are 10002-19999: keep the client server port out of that range)
RAY_HEAD_ARGS=(--head --port="$RAY_PORT" --dashboard-port=$(( 8265 + PORT_OFFSET ))
  --ray-client-server-port=$(( 20001 + PORT_OFFSET )))
export RAY_AUTH_MODE=disabled   # otherwise Ray 2.60 writes ~/.ray/auth_token
export RAY_USAGE_STATS_ENABLED=0
# at job end the driver is done: nothing to drain (otherwise SIGTERM waits up to 30 s, see cleanup)
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
export PYTHONUNBUFFERED=1

if (( N_NODES == 1 )); then
  # Single node: keep Ray on loopback (otherwise Ray rewrites 127.0.0.1 to the host address).
  # Never on multi-node jobs: with it, Ray refuses to start worker nodes.
  export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
  HEAD_IP=127.0.0.1
else
  # `hostname -I`, not `--ip-address`: Debian-style /etc/hosts map the hostname to 127.0.1.1
  HEAD_IP=${RAY_HEAD_IP:-$(hostname -I | awk '{print $1}')}
fi
export RAY_ADDRESS=$HEAD_IP:$RAY_PORT

RAY_ENV=()
if (( RAY_BOOTSTRAP_HOME )); then
  # Ray's dashboard probes cloud metadata addresses at start unless $HOME/ray_bootstrap_config.yaml
  # exists: give the Ray processes (only them) such a HOME, on every node
  RAY_HOME=/tmp/ray_home_${SLURM_JOB_ID}
  srun --nodes="$N_NODES" --ntasks="$N_NODES" --ntasks-per-node=1 \
    bash -c 'mkdir -p "$1" && touch "$1/ray_bootstrap_config.yaml"' _ "$RAY_HOME"
  RAY_ENV=(env HOME="$RAY_HOME")
fi

# ---- cleanup: stop only this job's Ray. Not `ray stop`: it kills every Ray process of this user on
# the node (other jobs' clusters included), and after it the `ray start --block` steps never exit.
# `scancel --signal=TERM <job>` signals the job's steps but not this script: each `ray start --block`
# then shuts its node down at once (draining is off, above). SIGTERM to an srun itself SIGKILLs its
# tasks: the last resort.
STEP_PIDS=()
CLEANED=0
steps_alive() { local p; for p in "${STEP_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
cleanup() {
  (( CLEANED )) && return 0
  CLEANED=1
  (( ${#STEP_PIDS[@]} )) || return 0
  log "stopping Ray (srun steps ${STEP_PIDS[*]})"
  scancel --signal=TERM "$SLURM_JOB_ID"
  local i
  for (( i = 0; i < 90; i++ )); do
    steps_alive || break
    (( i == 80 )) && { log "Ray steps still running after 40 s: terminating them"; kill -TERM "${STEP_PIDS[@]}" 2>/dev/null; }
    sleep 0.5
  done
  steps_alive && { log "Ray steps still running: SIGKILL"; kill -KILL "${STEP_PIDS[@]}" 2>/dev/null; }
  wait "${STEP_PIDS[@]}" 2>/dev/null
  log "Ray stopped"
}
trap cleanup EXIT

DRIVER_PID=
PREEMPTED=0
on_usr2() {  # sent by Slurm (--signal=B:USR2@...) shortly before the time limit, or by hand:
  # `scancel --batch --signal=USR2 <job>` (a preemption that requeues). USR2, not TERM, goes to
  # the driver: the jobs stop cleanly on it (jobkit.guard_signals), and Ray replaces the
  # driver's SIGTERM handler with a plain exit.
  log "USR2: stopping the driver (finished rows are kept in the row cache)"
  PREEMPTED=1
  [[ -n $DRIVER_PID ]] && kill -USR2 "$DRIVER_PID" 2>/dev/null
}
trap on_usr2 USR2

# ---- Ray head on this (the first) node
log "starting Ray head on ${HEAD_NODE} (${RAY_ADDRESS}, temp dir ${RAY_TMP}, ${RAY_CPUS} CPUs, ${RAY_GPUS} GPUs/node)"
# `ray start` writes this file once the head's processes are all up (a requeued job reuses the dir).
# Polling it is instant; `ray health-check` costs ~4 s per call and blocks ~40 s on a dead head.
READY_FILE=$RAY_TMP/ray_current_cluster
rm -f "$READY_FILE"
srun --nodes=1 --ntasks=1 -w "$HEAD_NODE" --cpus-per-task="$RAY_CPUS" \
  "${CONTAINER[@]}" "${RAY_ENV[@]}" ray start "${RAY_HEAD_ARGS[@]}" "${RAY_NODE_ARGS[@]}" \
  --temp-dir="$RAY_TMP" &
STEP_PIDS+=($!)
START=$SECONDS
until [[ -s $READY_FILE ]]; do
  if ! kill -0 "${STEP_PIDS[0]}" 2>/dev/null || (( SECONDS - START >= RAY_START_TIMEOUT )); then
    log "ERROR: the Ray head did not come up at ${RAY_ADDRESS} in $(( SECONDS - START ))s;" \
      "see the head's output above and ${RAY_TMP}/session_latest/logs on ${HEAD_NODE}"
    exit 3
  fi
  sleep 0.5
done
log "Ray head is up after $(( SECONDS - START ))s"

# ---- Ray workers on the other nodes (one srun step for all of them; each names its temp dir
# after its own node)
if (( N_NODES > 1 )); then
  srun --nodes=$(( N_NODES - 1 )) --ntasks=$(( N_NODES - 1 )) --ntasks-per-node=1 \
    --exclude="$HEAD_NODE" --cpus-per-task="$RAY_CPUS" \
    bash -c 'tmp=$1/${SLURMD_NODENAME%%.*}; shift; exec "$@" --temp-dir="$tmp"' _ "$RAY_TMP_JOB" \
    "${CONTAINER[@]}" "${RAY_ENV[@]}" ray start --address="$RAY_ADDRESS" "${RAY_NODE_ARGS[@]}" &
  STEP_PIDS+=($!)
  "${CONTAINER[@]}" python - "$N_NODES" "$RAY_START_TIMEOUT" <<'PY' || exit 3
import sys, time

import ray

want, limit = int(sys.argv[1]), float(sys.argv[2])
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + limit
while (alive := sum(n["Alive"] for n in ray.nodes())) < want:
    if time.monotonic() > deadline:
        sys.exit(f"[ray_job] ERROR: only {alive}/{want} Ray nodes joined in {limit:.0f}s")
    time.sleep(1)
print(f"[ray_job] all {alive} Ray nodes joined", flush=True)
PY
fi

# ---- the driver: the same `python -m jobs.<job>` as on a laptop, pointed at this cluster
if (( PREEMPTED )); then
  log "USR2 arrived while Ray was starting: the driver is not started"
  DRIVER_RC=1
else
  log "driver: ${DRIVER[*]}"
  "${CONTAINER[@]}" "${DRIVER[@]}" &
  DRIVER_PID=$!
  while :; do
    wait "$DRIVER_PID"
    DRIVER_RC=$?
    # >128: a trap interrupted `wait` while the driver may still be running
    (( DRIVER_RC > 128 )) && kill -0 "$DRIVER_PID" 2>/dev/null && continue
    break
  done
  log "driver exited with code ${DRIVER_RC}"
fi

cleanup
if (( PREEMPTED && REQUEUE_ON_USR2 )); then
  log "requeueing job ${SLURM_JOB_ID}: the rerun resumes from the run dir"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$DRIVER_RC"
