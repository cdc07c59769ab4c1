#!/usr/bin/env bash
# A real, single-node SLURM cluster (Debian 12, SLURM 22.05) for tests and CI.
#
#   tests/slurm/cluster.sh start DIR   install packages if missing, write the
#                                      configs into DIR, start the daemons, wait
#                                      until the node is idle, print env exports
#   tests/slurm/cluster.sh stop DIR    cancel this cluster's jobs, then stop the
#                                      daemons whose PIDs are recorded in DIR
#   tests/slurm/cluster.sh status DIR  show which recorded daemons are alive
#
# Usage:  eval "$(tests/slurm/cluster.sh start /tmp/slurm)" && sinfo
#
# Everything lives under DIR: slurm.conf, slurmdbd.conf, gres.conf,
# cgroup.conf, the munge key and socket, the MariaDB data directory, the
# controller state, the slurmd spool, logs and PID files.  Clients (sbatch,
# squeue, sacct, scontrol, the Snakemake SLURM plugin) find the cluster through
# SLURM_CONF=DIR/slurm.conf, which `start` prints; SLURM reads gres.conf,
# cgroup.conf and slurmdbd.conf from the directory of SLURM_CONF, and slurm.conf
# names the private munge socket (AuthInfo), so a system munged is never used.
#
# The one thing written outside DIR is a symlink /etc/slurm/slurm.conf ->
# DIR/slurm.conf: inside each job the Snakemake jobstep plugin runs `srun` with
# every SLURM_* variable removed from its environment, SLURM_CONF included, so
# that srun can only find the compiled-in /etc/slurm/slurm.conf.  `start` makes
# the link only where there is no file or only an earlier link of this script;
# it never replaces a real /etc/slurm/slurm.conf (it stops with an error;
# NCAFLOW_SLURM_ETC_LINK=0 skips the link, and then only plain sbatch jobs
# work).  `stop` removes the link if it still points into DIR.
#
# Accounting is on: slurmdbd with a private MariaDB (TCP on 127.0.0.1), so
# `sacct` works and the Snakemake SLURM plugin uses its default status command.
#
# Must run as root (the daemons run as root; SlurmUser=root).  Ports can be
# moved with NCAFLOW_SLURM_{CTLD,D,DBD,MYSQL}_PORT if the defaults are taken.
# The script is re-runnable: `start` on a DIR whose daemons are still up stops
# them first; state (job ids, accounting database) is kept between starts.
set -euo pipefail

CTLD_PORT=${NCAFLOW_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${NCAFLOW_SLURM_D_PORT:-6818}
DBD_PORT=${NCAFLOW_SLURM_DBD_PORT:-6819}
MYSQL_PORT=${NCAFLOW_SLURM_MYSQL_PORT:-13306}
CLUSTER=ncaflow
PARTITION=debug
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd slurm-wlm-mysql-plugin
    mariadb-server mariadb-client)
DAEMONS_STOP_ORDER=(slurmd slurmctld slurmdbd mariadb munged)

log() { echo "cluster.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.5 s
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
    log "$what: ok"
}

alive() { # alive PIDFILE -> pid is running
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

have_packages() {
    local bin
    for bin in slurmctld slurmd slurmdbd sbatch sacct munged mariadbd mariadb-install-db mariadb; do
        command -v "$bin" >/dev/null 2>&1 || return 1
    done
    compgen -G "/usr/lib/*/slurm-wlm/accounting_storage_mysql.so" >/dev/null
}

install_packages() {
    have_packages && return 0
    [[ $(id -u) == 0 ]] || die "SLURM packages missing and not root: cannot apt-get install"
    command -v apt-get >/dev/null || die "SLURM packages missing and no apt-get"
    log "installing ${PACKAGES[*]}"
    # keep the packages' maintainer scripts from starting system daemons
    local policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)
    # update the package lists only when they are missing or too old to install
    if ! "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >&2; then
        "${apt[@]}" update >&2
        "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >&2
    fi
    have_packages || die "packages installed but binaries still missing"
}

write_configs() {
    local dir=$1 node=$2
    # Hardware as slurmd itself sees it, so the node is never drained.
    local hw sockets cores threads mem
    hw=$(slurmd -C | head -1)
    sockets=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$hw")
    cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$hw")
    threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$((mem * 9 / 10)) # leave room for the OS; jobs ask for --mem
    local cpus=$((sockets * cores * threads))

    cat >"$dir/slurm.conf" <<EOF
# Written by tests/slurm/cluster.sh: a single-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CryptoType=crypto/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
# Finished jobs stay visible to squeue for 5 minutes: the SLURM plugin's
# status checks may use squeue when MinJobAge >= 3x their first interval.
MinJobAge=300
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for slurmdbd with munge this names the munge socket clients must use
AccountingStoragePass=$dir/munge/munge.socket
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem Gres=gpu:1 State=UNKNOWN
# Two partitions on the one node: jobs land in 'debug' only when asked for,
# which shows that the partition setting reaches sbatch.
PartitionName=main Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=$PARTITION Nodes=$node MaxTime=INFINITE State=UP
EOF

    # A fake GPU: the gres is only bookkeeping; /dev/null always exists.
    cat >"$dir/gres.conf" <<EOF
NodeName=$node Name=gpu File=/dev/null
EOF

    # Not used by proctrack/linuxproc + task/none; present so no stray
    # /etc/slurm/cgroup.conf is picked up.
    cat >"$dir/cgroup.conf" <<EOF
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF

    cat >"$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$dir/slurmdbd.conf" # slurmdbd refuses a readable config
}

start_munge() {
    local dir=$1
    local key=$dir/munge/munge.key
    if [[ ! -s $key ]]; then
        dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    fi
    chmod 700 "$dir/munge"
    chmod 400 "$key"
    munged --force --socket="$dir/munge/munge.socket" --key-file="$key" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    wait_for 20 "munged" bash -c "munge -S '$dir/munge/munge.socket' -n | unmunge -S '$dir/munge/munge.socket'" ||
        die "munged did not come up; see $dir/log/munged.log"
}

start_mariadb() {
    local dir=$1
    local data=$dir/mysql sock=$dir/mysql/mysqld.sock
    local fresh=0
    if [[ ! -d $data/mysql ]]; then
        mariadb-install-db --no-defaults --user=root --datadir="$data" \
            --auth-root-authentication-method=normal --skip-test-db >"$dir/log/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed; see $dir/log/mariadb-install.log"
        fresh=1
    fi
    # --no-defaults: ignore /etc/mysql; private socket, port and data dir
    mariadbd --no-defaults --user=root --datadir="$data" --socket="$sock" \
        --port="$MYSQL_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$dir/run/mariadb.pid" --log-error="$dir/log/mariadb.log" \
        --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
        --max-connections=64 >/dev/null 2>&1 &
    disown
    wait_for 60 "mariadb" mariadb --no-defaults -uroot -S "$sock" -e "SELECT 1" ||
        die "mariadb did not come up; see $dir/log/mariadb.log"
    if ((fresh)); then
        mariadb --no-defaults -uroot -S "$sock" <<'EOF'
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
    fi
}

# link_etc_conf DIR: let clients without SLURM_CONF find this cluster
link_etc_conf() {
    local dir=$1 etc=/etc/slurm/slurm.conf
    [[ ${NCAFLOW_SLURM_ETC_LINK:-1} == 1 ]] || {
        log "NCAFLOW_SLURM_ETC_LINK=0: not linking $etc; Snakemake jobs (srun) will fail"
        return 0
    }
    if [[ -e $etc && ! -L $etc ]]; then
        die "$etc exists and is not a link made by this script; refusing to replace it" \
            "(move it away, or set NCAFLOW_SLURM_ETC_LINK=0)"
    fi
    mkdir -p /etc/slurm
    ln -sfn "$dir/slurm.conf" "$etc"
}

unlink_etc_conf() {
    local dir=$1 etc=/etc/slurm/slurm.conf
    if [[ -L $etc && $(readlink "$etc") == "$dir/slurm.conf" ]]; then
        rm -f "$etc"
    fi
}

node_idle() {
    [[ $(sinfo -h -N -n "$1" -o %t 2>/dev/null | sort -u) == idle ]]
}

cmd_start() {
    local dir=$1
    [[ $(id -u) == 0 ]] || die "must run as root (the daemons run as root)"
    install_packages
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    # unix socket paths must stay short (108 bytes)
    ((${#dir} < 70)) || die "DIR path too long for unix sockets: $dir"
    if compgen -G "$dir/run/*.pid" >/dev/null; then
        log "stopping daemons left over in $dir"
        cmd_stop "$dir"
    fi
    mkdir -p "$dir"/{run,log,state,spool/slurmd,munge}
    local node
    node=$(hostname -s)
    write_configs "$dir" "$node"
    link_etc_conf "$dir"
    export SLURM_CONF=$dir/slurm.conf

    start_munge "$dir"
    start_mariadb "$dir"

    slurmdbd
    wait_for 60 "slurmdbd" sacctmgr -n list cluster ||
        die "slurmdbd did not come up; see $dir/log/slurmdbd.log"
    # Register the cluster before slurmctld starts, so it is accounted at once.
    if [[ -z $(sacctmgr -n -P list cluster format=cluster "where" cluster="$CLUSTER") ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi

    slurmctld -f "$SLURM_CONF"
    wait_for 60 "slurmctld" scontrol ping ||
        die "slurmctld did not come up; see $dir/log/slurmctld.log"
    # -N: the node name, even if this host's name does not resolve
    slurmd -f "$SLURM_CONF" -N "$node"
    if ! wait_for 60 "node $node idle" node_idle "$node"; then
        # a node that was down when the controller last ran keeps that state
        scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
        wait_for 30 "node $node idle" node_idle "$node" ||
            die "node $node is not idle: $(sinfo -N -h -o '%t %E' -n "$node"); see $dir/log/"
    fi
    echo "export SLURM_CONF=$dir/slurm.conf"
    echo "export NCAFLOW_SLURM_PARTITION=$PARTITION"
}

# stop_pid NAME PIDFILE: SIGTERM, wait up to 20 s, then SIGKILL
stop_pid() {
    local name=$1 pidfile=$2 pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $name ($pid)"
    fi
    rm -f "$pidfile"
}

cmd_stop() {
    local dir=$1
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd -P)
    # Cancel this cluster's jobs first, so no slurmstepd outlives slurmd.
    if alive "$dir/run/slurmctld.pid" && [[ -f $dir/slurm.conf ]]; then
        local jobs
        jobs=$(SLURM_CONF=$dir/slurm.conf timeout 10 squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            SLURM_CONF=$dir/slurm.conf timeout 10 scancel $jobs 2>/dev/null || true
            local deadline=$((SECONDS + 15))
            while [[ -n $(SLURM_CONF=$dir/slurm.conf timeout 10 squeue -h -t R,CG -o %A 2>/dev/null) ]] &&
                ((SECONDS < deadline)); do
                sleep 0.5
            done
        fi
    fi
    local name
    for name in "${DAEMONS_STOP_ORDER[@]}"; do
        stop_pid "$name" "$dir/run/$name.pid"
    done
    unlink_etc_conf "$dir"
}

cmd_status() {
    local dir=$1 name rc=0
    for name in "${DAEMONS_STOP_ORDER[@]}"; do
        if alive "$dir/run/$name.pid"; then
            echo "$name: running ($(cat "$dir/run/$name.pid"))"
        else
            echo "$name: stopped"
            rc=1
        fi
    done
    return $rc
}

case "${1:-}" in
start | stop | status)
    [[ $# == 2 ]] || die "usage: $0 start|stop|status DIR"
    "cmd_$1" "$2"
    ;;
*) die "usage: $0 start|stop|status DIR" ;;
esac
