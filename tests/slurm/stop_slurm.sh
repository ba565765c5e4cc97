#!/usr/bin/env bash
# Stop the test cluster started by start_slurm.sh: cancel its jobs, stop slurmd,
# slurmctld and munged by the pids recorded in $STATE/run, then remove $STATE
# (unless --keep-state).  Only processes started by start_slurm.sh are touched.
set -uo pipefail

STATE=${LEVERPLUS_SLURM_STATE:-/tmp/leverplus-slurm}
KEEP=0
[[ ${1:-} == --keep-state ]] && KEEP=1

log() { echo "[stop_slurm] $*" >&2; }

[[ -d $STATE ]] || { log "nothing to stop ($STATE does not exist)"; exit 0; }
export SLURM_CONF=$STATE/etc/slurm.conf

# Cancel leftover jobs first so slurmd does not leave slurmstepd children behind.
if [[ -s $STATE/run/slurmctld.pid ]] && kill -0 "$(cat "$STATE/run/slurmctld.pid")" 2>/dev/null; then
    scancel --full --quiet --user=root 2>/dev/null || true
    for _ in $(seq 25); do
        [[ -z $(squeue -h -t RUNNING,COMPLETING,PENDING 2>/dev/null) ]] && break
        sleep 0.2
    done
fi

# SIGTERM the given daemons together, wait up to 5 s, then SIGKILL what is left.
stop_pidfiles() {
    local name f pid pids=()
    for name in "$@"; do
        f=$STATE/run/$name.pid
        [[ -s $f ]] || continue
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null && pids+=("$name:$pid")
    done
    for _ in $(seq 50); do
        local left=0
        for np in "${pids[@]}"; do kill -0 "${np#*:}" 2>/dev/null && left=1; done
        [[ $left == 0 ]] && break
        sleep 0.1
    done
    for np in "${pids[@]}"; do
        if kill -0 "${np#*:}" 2>/dev/null; then
            log "${np%%:*} (${np#*:}) ignored SIGTERM, sending SIGKILL"
            kill -KILL "${np#*:}" 2>/dev/null
        fi
    done
    for name in "$@"; do rm -f "$STATE/run/$name.pid"; done
}

# slurmstepd processes of this cluster (if any survived scancel): children of our
# slurmd, found by parent pid rather than by name.
if [[ -s $STATE/run/slurmd.pid ]]; then
    dpid=$(cat "$STATE/run/slurmd.pid")
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null) == "$dpid" ]] || continue
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == slurmstepd ]] && kill -KILL "$p" 2>/dev/null
    done
fi

stop_pidfiles slurmd slurmctld
stop_pidfiles munged   # last: the slurm daemons authenticate through it

# the compiled-in config path, linked by start_slurm.sh (only if it is our link)
if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$STATE/etc/slurm.conf" ]]; then
    rm -f /etc/slurm/slurm.conf
fi

if [[ $KEEP == 0 ]]; then
    rm -rf "$STATE"
    log "stopped and removed $STATE"
else
    log "stopped (state kept in $STATE)"
fi
