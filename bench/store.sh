#!/bin/sh
# Benchmark of the store: mgmt's embedded etcd v3 server beside a real etcd (/usr/bin/etcd) on
# the same machine, same run. Prints a markdown table on stdout (progress on stderr).
# STORE_BENCH_SECS sets the length of each throughput phase (default 3 s; 12 phases per server).
set -eu
cd "$(dirname "$0")/.."
command -v /usr/bin/etcd >/dev/null || { echo "needs /usr/bin/etcd (apt-get install etcd-server)" >&2; exit 2; }
exec cargo bench -p store --bench store -- "$@"
