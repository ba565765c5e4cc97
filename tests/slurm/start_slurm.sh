#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster on 127.0.0.1 (root, no systemd needed).
#
#   tests/slurm/start_slurm.sh            # idempotent: reuses a running cluster
#   source "$LEVERPLUS_SLURM_STATE/env.sh"   # exports SLURM_CONF for sbatch/squeue/...
#   tests/slurm/stop_slurm.sh
#
# Everything (config, munge key + socket, spool, logs, pid files) lives under
# $LEVERPLUS_SLURM_STATE (default /tmp/leverplus-slurm); the only file outside it
# is the symlink /etc/slurm/slurm.conf -> $STATE/etc/slurm.conf (created only where
# no slurm.conf exists; removed by stop_slurm.sh).  The system munged, if any, is
# left alone.  Daemons started here are
# recorded in $STATE/run/*.pid so stop_slurm.sh stops exactly these processes.
#
# Environment knobs:
#   LEVERPLUS_SLURM_STATE        state directory                      [/tmp/leverplus-slurm]
#   LEVERPLUS_SLURM_PORT         slurmctld port (slurmd uses PORT+1)  [16817]
#   LEVERPLUS_SLURM_GPU_PARTITION  name of the "GPU" partition        [lp-gpu]
#   LEVERPLUS_SLURM_CPU_PARTITION  name of the CPU-throttled partition [lp-cpu-throttled]
# A third partition, lp-debug, is the cluster default: a job submitted without a
# partition lands there, which the tests detect.  (profiles/slurm-test names the
# first two.)
#   LEVERPLUS_SLURM_NO_INSTALL=1 never call apt-get (fail if binaries are missing)
#   LEVERPLUS_SLURM_OWNER_PID    the process this cluster belongs to   [the caller, $PPID]
#
#   tests/slurm/start_slurm.sh --install-only   # only install the Debian packages (CI does this first)
#
# Stale clusters: the owner's pid and start time are recorded in $STATE/owner.  If
# /etc/slurm/slurm.conf links into another state directory whose owner is gone (a
# killed test run: its daemons still running, its link left behind), that cluster is
# stopped with stop_slurm.sh and this one starts.  A cluster whose owner is alive is
# never touched (exit 2).
#
# Exit codes: 0 ready, 2 cannot run here (not root / packages unavailable), 1 failure.
set -euo pipefail

STATE=${LEVERPLUS_SLURM_STATE:-/tmp/leverplus-slurm}
PORT=${LEVERPLUS_SLURM_PORT:-16817}
GPU_PART=${LEVERPLUS_SLURM_GPU_PARTITION:-lp-gpu}
CPU_PART=${LEVERPLUS_SLURM_CPU_PARTITION:-lp-cpu-throttled}
SLURM_PKGS=(slurmctld slurmd slurm-client munge)

log() { echo "[start_slurm] $*" >&2; }
cant_run() { log "CANNOT RUN: $*"; exit 2; }

[[ $(id -u) -eq 0 ]] || cant_run "must run as root (slurmd and munged need it)"

have_binaries() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v munged >/dev/null && command -v sbatch >/dev/null &&
        command -v squeue >/dev/null && command -v sinfo >/dev/null
}

INSTALL_ONLY=0
[[ ${1:-} == --install-only ]] && INSTALL_ONLY=1

if ! have_binaries; then
    [[ ${LEVERPLUS_SLURM_NO_INSTALL:-0} == 1 ]] && cant_run "slurm/munge not installed and LEVERPLUS_SLURM_NO_INSTALL=1"
    command -v apt-get >/dev/null || cant_run "slurm/munge not installed and no apt-get"
    log "installing ${SLURM_PKGS[*]} (Debian packages)"
    # A policy-rc.d answering 101 keeps the packages' init scripts from starting the
    # system daemons; install one only for the duration of apt-get if none exists.
    tmp_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        tmp_policy=/usr/sbin/policy-rc.d
    fi
    install_ok=1
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${SLURM_PKGS[@]}" >"${TMPDIR:-/tmp}/leverplus-slurm-apt.log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update >>"${TMPDIR:-/tmp}/leverplus-slurm-apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${SLURM_PKGS[@]}" >>"${TMPDIR:-/tmp}/leverplus-slurm-apt.log" 2>&1 || install_ok=0
    fi
    [[ -n $tmp_policy ]] && rm -f "$tmp_policy"
    [[ $install_ok == 1 ]] || cant_run "apt-get install ${SLURM_PKGS[*]} failed (see ${TMPDIR:-/tmp}/leverplus-slurm-apt.log)"
    have_binaries || cant_run "packages installed but slurm binaries still missing"
fi
[[ $INSTALL_ONLY == 1 ]] && { log "slurm binaries present"; exit 0; }

mkdir -p "$STATE"/{etc,munge,run,log,spool/ctld,spool/d}
chmod 700 "$STATE/munge"
CONF=$STATE/etc/slurm.conf
export SLURM_CONF=$CONF

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# The start time of process $1 in clock ticks (field 22 of /proc/<pid>/stat): recorded
# with the owner's pid, so that a recycled pid is not taken for the owner.
proc_id() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    awk '{ print $20 }' <<<"${stat##*) }"  # the fields after "(comm) "; comm may contain spaces
}
owner_alive() {  # $1: an owner file written below
    local pid start now
    [[ -s $1 ]] || return 1
    read -r pid start <"$1" || return 1
    now=$(proc_id "$pid") || return 1
    [[ $now == "$start" ]]
}
# Processes whose command line names a file under the state directory $1 (munged's
# --key-file, the daemons' -f slurm.conf): the fallback when its pid files are gone.
stop_by_state_path() {
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$1/" || continue
        [[ $p == "$$" ]] && continue
        log "stopping leftover process $p of $1: $(tr '\0' ' ' <"/proc/$p/cmdline")"
        kill -KILL "$p" 2>/dev/null || true
    done
}

node_ready() {
    local st
    st=$(sinfo -h -N -o '%T' 2>/dev/null | sort -u | tr '\n' ' ') || return 1
    [[ $st =~ ^(idle|mixed|allocated)\ *$ ]]
}

# ---- already up? (idempotent) ------------------------------------------------
if pid_alive "$STATE/run/munged.pid" && pid_alive "$STATE/run/slurmctld.pid" &&
    pid_alive "$STATE/run/slurmd.pid" && node_ready; then
    log "already running (state $STATE)"
    echo "$STATE"
    exit 0
fi
# Partially up (e.g. a crashed daemon): tear down what we own, start clean.
if compgen -G "$STATE/run/*.pid" >/dev/null; then
    log "stale/partial cluster found, stopping it first"
    LEVERPLUS_SLURM_STATE=$STATE "$(dirname "$0")/stop_slurm.sh" --keep-state || true
fi

NODE=$(hostname -s)
read -r CPUS MEM < <(slurmd -C | awk '
    /^NodeName/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "CPUs") c = kv[2]; if (kv[1] == "RealMemory") m = kv[2] } }
    END { print c, m }')
[[ -n $CPUS && -n $MEM ]] || { log "slurmd -C did not report CPUs/RealMemory"; exit 1; }
# Leave headroom so slurmd never drains the node for "Low RealMemory".
MEM=$((MEM * 8 / 10))

# Job steps need the config too: the slurm-jobstep executor strips every SLURM_*
# variable (SLURM_CONF included) before calling srun inside the job, so srun only
# finds the config at the compiled-in default path.  Link it there -- unless that
# path holds a real config (a real cluster node: refuse to touch it).
SYS_CONF=/etc/slurm/slurm.conf
if [[ -L $SYS_CONF && $(readlink "$SYS_CONF") != "$CONF" ]]; then
    other=$(readlink "$SYS_CONF")
    other_state=${other%/etc/slurm.conf}
    ours_too=0  # a link made by this script: <state>/etc/slurm.conf, generated here (or already gone)
    if [[ $other_state != "$other" ]] && { [[ ! -e $other ]] || grep -q '^# generated by tests/slurm/start_slurm.sh' "$other"; }; then
        ours_too=1
    fi
    if [[ $ours_too == 1 ]] && ! owner_alive "$other_state/owner"; then
        log "stale test cluster in $other_state (owner $(cat "$other_state/owner" 2>/dev/null || echo unknown) is gone): stopping it"
        LEVERPLUS_SLURM_STATE=$other_state "$(dirname "$0")/stop_slurm.sh" || true
        stop_by_state_path "$other_state"
        # stop_slurm.sh removes the link when its state directory still exists; a dangling one goes here
        [[ -L $SYS_CONF && $(readlink "$SYS_CONF") == "$other" ]] && rm -f "$SYS_CONF"
    fi
fi
if [[ -L $SYS_CONF ]]; then
    [[ $(readlink "$SYS_CONF") == "$CONF" ]] || cant_run "$SYS_CONF is a symlink to $(readlink "$SYS_CONF"), not ours"
elif [[ -e $SYS_CONF ]]; then
    cant_run "$SYS_CONF exists (a real SLURM installation?); not overwriting it"
else
    mkdir -p /etc/slurm
    ln -s "$CONF" "$SYS_CONF"
fi

# ---- owner ---------------------------------------------------------------------
OWNER=${LEVERPLUS_SLURM_OWNER_PID:-$PPID}
owner_start=$(proc_id "$OWNER") || { log "owner process $OWNER does not exist"; exit 1; }
echo "$OWNER $owner_start" >"$STATE/owner"

# ---- munge (own key, own socket; the system munged is not touched) -------------
if [[ ! -s $STATE/munge/munge.key ]]; then
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1 count=1024 status=none
fi
chmod 400 "$STATE/munge/munge.key"
SOCK=$STATE/munge/munge.socket
if ! pid_alive "$STATE/run/munged.pid"; then
    rm -f "$SOCK" "$SOCK.lock"
    # --force: munged refuses root-owned/sticky paths such as /tmp without it.
    munged --force --key-file="$STATE/munge/munge.key" --socket="$SOCK" \
        --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munged.seed"
fi
for _ in $(seq 50); do [[ -S $SOCK ]] && break; sleep 0.1; done
munge -S "$SOCK" -n </dev/null | unmunge -S "$SOCK" >/dev/null ||
    { log "munge self-test failed, see $STATE/log/munged.log"; exit 1; }

# ---- slurm.conf ----------------------------------------------------------------
cat >"$CONF" <<EOF
# generated by tests/slurm/start_slurm.sh -- throw-away single-node test cluster
ClusterName=leverplus-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: plain /proc process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no accounting database: sacct has nothing to read, status must come from squeue
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# keep finished jobs visible to squeue/scontrol for an hour (squeue status queries)
MinJobAge=3600
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=lp-debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=$CPU_PART Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
PartitionName=$GPU_PART Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF
# cgroup v1 pinned: never let slurmd autodetect (hybrid v1/v2 mounts confuse it),
# and constrain nothing (task/none + proctrack/linuxproc do not use it anyway).
cat >"$STATE/etc/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF

cat >"$STATE/env.sh" <<EOF
export SLURM_CONF=$CONF
export LEVERPLUS_SLURM_STATE=$STATE
EOF

# ---- daemons --------------------------------------------------------------------
# -s would chdir; we want neither that nor a foreground process: both daemonise
# themselves and write the pid files configured above.
slurmctld -f "$CONF"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.2; done
scontrol ping | grep -q 'is UP' || { log "slurmctld did not come up, see $STATE/log/slurmctld.log"; tail -20 "$STATE/log/slurmctld.log" >&2; exit 1; }
slurmd -f "$CONF" -N "$NODE"

ok=0
for _ in $(seq 150); do
    if node_ready; then ok=1; break; fi
    sleep 0.2
done
if [[ $ok != 1 ]]; then
    log "node $NODE never became idle:"
    sinfo -N -l >&2 || true
    tail -20 "$STATE/log/slurmd.log" >&2 || true
    exit 1
fi
log "cluster up: node $NODE, partitions lp-debug (default), $CPU_PART, $GPU_PART; SLURM_CONF=$CONF"
echo "$STATE"
