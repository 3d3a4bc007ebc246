#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the sweep tests (run as root, e.g. by .ci/run):
# installs Debian's slurm-wlm and munge if missing, writes /etc/slurm/slurm.conf for one node
# on 127.0.0.1 named after this host, and starts munged, slurmctld and slurmd. Safe to rerun.
# Prints "slurm: ready" when the node accepts jobs; exits non-zero when it cannot get there.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "ci_slurm: needs root (it installs packages and starts daemons)" >&2
  exit 1
fi
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1 \
    || ! command -v pgrep >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge procps >/dev/null
fi

node="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/log/munge /var/lib/munge
cat > /etc/slurm/slurm.conf <<CONF
# Written by scripts/ci_slurm.sh: a one-node cluster for tests.
ClusterName=ci
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=5
MinJobAge=600
SlurmdTimeout=60
NodeName=${node} CPUs=${cpus} RealMemory=${mem_mb} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge 2>/dev/null || true
chown -R root:root /var/log/munge  # munged runs as root here and wants its log directory owned so
chmod 400 /etc/munge/munge.key
chmod 700 /etc/munge

pgrep -x munged >/dev/null || munged --force
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
  if sinfo -h -N -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "slurm: ready (node ${node}, ${cpus} CPUs)"
    exit 0
  fi
  scontrol update nodename="${node}" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "ci_slurm: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo -N >&2 || true
exit 1
