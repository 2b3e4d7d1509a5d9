#!/usr/bin/env bash
# Benchmark of hierarchical remote execution on the test bed: 20 leaves run through 2
# intermediates (2 x 10; the leaves sit on a network only the intermediates reach) against the
# same 20 graphs run on 20 hosts the initiator reaches directly. Each graph writes a file,
# exports one and collects every export; the run ends on cluster-wide convergence
# (--converged-timeout 1). Cold = no host has the binary cached; warm = the same run again.
# Prints a markdown table on stdout: wall time of the whole run and the bytes the initiator
# sent (sum of bytes_sent over the hosts it connects to itself). Needs root.
# MGMT=path picks the binary (default: a fresh debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ -z "${MGMT:-}" ]; then
    cargo build -q -p cli --bin mgmt
    MGMT="$root/target/debug/mgmt"
fi
cargo build -q -p testbed --bin testbed
TB="$root/target/debug/testbed"
command -v jq >/dev/null || { echo "needs jq" >&2; exit 2; }

work=$(mktemp -d /var/tmp/mgmt-bench-hier.XXXXXX)
beds=()
cleanup() {
    for b in "${beds[@]}"; do "$TB" down "$b" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/home"

# graph NAME REMOTE [REMOTES...] > file
graph() {
    local name=$1 remote=$2
    shift 2
    printf 'graph: %s\nremote: %s\nresources:\n  file:\n' "$name" "$remote"
    printf '  - name: own\n    path: /tmp/bench-own\n    content: "i am %s\\n"\n    state: exists\n' "$name"
    printf '  - name: "@@%s"\n    path: /tmp/bench-%s\n    content: "exported by %s\\n"\n    state: exists\n' "$name" "$name" "$name"
    printf 'collect:\n- kind: file\n  pattern: /tmp/\n'
    if [ $# -gt 0 ]; then
        printf 'remotes:\n'
        for r in "$@"; do printf -- '- %s\n' "$r"; done
    fi
}

# addr DIR hN: the address of a host in a test bed's ssh_config
addr() {
    awk -v h="$2" '$1 == "Host" { on = ($2 == h) } on && $1 == "HostName" { print $2 }' "$1/ssh_config"
}

# run LABEL BEDDIR FILES...: one measured run; prints a table row
run() {
    local label=$1 bed=$2
    shift 2
    local args=() f
    for f in "$@"; do args+=(--remote "$f"); done
    local out="$work/$label.json" start end
    start=$(date +%s.%N)
    HOME="$work/home" SSH_AUTH_SOCK='' "$MGMT" run --json --client-urls http://127.0.0.1:0 \
        --known-hosts "$bed/known_hosts" --ssh-identity "$bed/client_key" \
        --converged-timeout 1 "${args[@]}" >"$out" 2>"$work/$label.log" ||
        { echo "run $label failed, see $work/$label.log" >&2; tail -20 "$work/$label.log" >&2; exit 1; }
    end=$(date +%s.%N)
    local reason bytes hosts
    reason=$(jq -r 'select(.event == "exit") | .reason' "$out")
    bytes=$(jq -s '[.[] | select(.event == "host_summary" and .via == null) | .bytes_sent] | add' "$out")
    hosts=$(jq -s '[.[] | select(.event == "host_summary" and .status == "ok")] | length' "$out")
    printf '| %s | %.1f | %s | %s | %s |\n' "$label" "$(echo "$end - $start" | bc)" \
        "$bytes" "$hosts" "$reason"
}

echo "building test beds (22 + 20 hosts)..." >&2
hier="$work/bed-hier"
"$TB" up 2 --leaves 20 --intermediates h1,h2 --dir "$hier" >/dev/null
beds+=("$hier")
direct="$work/bed-direct"
"$TB" up 20 --dir "$direct" >/dev/null
beds+=("$direct")

mkdir -p "$work/g-hier/leaves" "$work/g-direct"
a=() b=()
for n in $(seq 3 22); do
    graph "h$n" "ssh://h$n" >"$work/g-hier/leaves/h$n.yaml"
    if [ $((n % 2)) -eq 1 ]; then a+=("leaves/h$n.yaml"); else b+=("leaves/h$n.yaml"); fi
done
graph i1 "ssh://root@$(addr "$hier" h1):22" "${a[@]}" >"$work/g-hier/i1.yaml"
graph i2 "ssh://root@$(addr "$hier" h2):22" "${b[@]}" >"$work/g-hier/i2.yaml"
directs=()
for n in $(seq 1 20); do
    graph "h$n" "ssh://root@$(addr "$direct" "h$n"):22" >"$work/g-direct/h$n.yaml"
    directs+=("$work/g-direct/h$n.yaml")
done

echo "binary: $MGMT ($(stat -c %s "$MGMT") bytes)"
echo
echo "| run | wall (s) | bytes sent by the initiator | hosts ok | end |"
echo "|---|---|---|---|---|"
run "2 x 10 via 2 intermediates, cold" "$hier" "$work/g-hier/i1.yaml" "$work/g-hier/i2.yaml"
run "20 direct hosts, cold" "$direct" "${directs[@]}"
run "2 x 10 via 2 intermediates, warm" "$hier" "$work/g-hier/i1.yaml" "$work/g-hier/i2.yaml"
run "20 direct hosts, warm" "$direct" "${directs[@]}"
