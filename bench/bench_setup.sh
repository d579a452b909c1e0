#!/usr/bin/env bash
# Time `.ci/setup` as on a fresh machine (BENCHMARKS.md, "Setup time (issue 19)"): a copy of the
# checkout in a new venv, pip's cache empty (every wheel is downloaded), empty model and XDG caches;
# then a second run (idempotence), then the README's main job. The main Python is not touched.
#
#   bash bench/bench_setup.sh [--ref REV] [--no-job] [--smoke] [--keep] [WORKDIR]
#
#   --ref REV   set up `git archive REV` (e.g. the commit before a change) instead of the
#               working tree (tracked and untracked, not ignored files)
#   --no-job    stop after the two setup runs
#   --smoke     run the main job on 2 prompts with 8 tokens instead of the README's command
#   --keep      keep WORKDIR (default /tmp/bench_setup; about 4 GB) instead of removing it
#
# Each setup run prints its own steps ("setup: ok (...), resolve 70 s, download+install ...").
# pip's own settings apply: to measure PyPI over the network with torch's CPU wheel from a local
# folder, as on the machine of BENCHMARKS.md: PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS=/opt/wheels
# PYTHONDONTWRITEBYTECODE (set on that machine) makes .ci/setup byte-compile at install time:
# measure both ways (env -u PYTHONDONTWRITEBYTECODE bash bench/bench_setup.sh ...).
set -euo pipefail
REF="" JOB=full KEEP=0 WORK=/tmp/bench_setup
while [ $# -gt 0 ]; do
  case $1 in
    --ref) REF=$2; shift ;;
    --no-job) JOB=none ;;
    --smoke) JOB=smoke ;;
    --keep) KEEP=1 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) WORK=$1 ;;
  esac
  shift
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
BASE_PY=${BASE_PYTHON:-python3.11}
rm -rf "$WORK" && mkdir -p "$WORK/src"
[ $KEEP = 1 ] || trap 'rm -rf "$WORK"' EXIT
if [ -n "$REF" ]; then
  git -C "$REPO" archive "$REF" | tar -x -C "$WORK/src"
else
  (cd "$REPO" && git ls-files -co --exclude-standard -z |
     while IFS= read -r -d '' f; do [ ! -e "$f" ] || cp --parents "$f" "$WORK/src"; done)
fi
"$BASE_PY" -m venv "$WORK/venv"
# a fresh machine: pip's cache empty (not off: from an index that sends cache headers, as PyPI
# does, .ci/setup's install step reuses the wheels its resolve step downloaded; a registry proxy
# that sends none makes pip download them twice), no converted model, no vLLM/torch compile caches
export PYTHON=$WORK/venv/bin/python PIP_CACHE_DIR=$WORK/pip-cache
unset PIP_NO_CACHE_DIR
export ALIGNCULTURA_CACHE=$WORK/cache XDG_CACHE_HOME=$WORK/xdg
unset RAY_ADDRESS

now() { date +%s.%N; }
rx() { awk -F'[: ]+' '$2 != "lo" && NF > 3 {s += $3} END {print s}' /proc/net/dev; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
timed() {  # timed LABEL CMD...: wall and CPU time (user + system, children included), bytes
  local l0 r0 t0 rc=0  # received by the whole machine, load average before and after
  l0=$(load) r0=$(rx) t0=$(now)
  /usr/bin/time -f %U+%S -o "$WORK/cpu" "${@:2}" || rc=$?
  printf '%-20s %6.1f s wall %6.1f s CPU  rx %5d MB  load %s -> %s  rc %d\n' "$1" \
    "$(echo "$(now) - $t0" | bc)" "$(tail -1 "$WORK/cpu" | bc)" $((($(rx) - r0) / 1000000)) \
    "$l0" "$(load)" $rc
  return $rc
}

echo "$(date -Is) $(nproc) cores, $("$PYTHON" -V), pip $("$PYTHON" -m pip -V | cut -d' ' -f2)," \
  "PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-}, src ${REF:-working tree}"
timed "setup, fresh" bash "$WORK/src/.ci/setup"
timed "setup, second run" bash "$WORK/src/.ci/setup"
du -sh "$WORK/venv" | sed 's/^/venv size: /'
cd "$WORK/src"
case $JOB in
  full) timed "main job (README)" "$PYTHON" -m jobs.benchmark experiment=quickstart ;;
  smoke) timed "main job (smoke)" "$PYTHON" -m jobs.benchmark experiment=quickstart \
           dataset.limit=2 generation.max_tokens=8 wandb.mode=disabled run_dir="$WORK/run" \
           cache_dir=off ;;
esac
