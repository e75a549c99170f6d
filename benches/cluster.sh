#!/usr/bin/env bash
# The cluster benchmarks of issue 17 (BENCHMARKS.md, "Cluster: 1, 2 and 3
# nodes on one PostgreSQL"): throughput and CPU per request of 1, 2 and 3
# `keyward dev` nodes sharing one throwaway PostgreSQL (.ci/postgres.sh) on
# this machine, then the invalidation delay (DisableKey on node 1 -> first
# refused Decrypt on node 2), idle and under load.
#
#   cargo build --release -p keyward -p keyward-load -p keyward-proxy -p keyward-enclave
#   bash benches/cluster.sh            # as root: nice -n -5 bash benches/cluster.sh
#
# Environment (defaults): BIN (target/release), DIR (/tmp/keyward-cluster:
# data dirs, logs and every keyward-load output), PORT_BASE (17800: node i
# serves on PORT_BASE+i, its admin listener on PORT_BASE+10+i), ROUNDS (2;
# 0 runs the invalidation only:
# the sequence N = 1, 2, 3 repeated), CONCURRENCY (64 connections in all,
# spread over the nodes), DURATION (8 s measured), WARMUP (2 s), SAMPLES (100).
#
# Every run is one keyward-load process spreading its connections over the N
# nodes; the CPU time per answered request is that of the client, the proxies
# (all nodes added up), the enclaves (same) and PostgreSQL (the postmaster
# and all its backends).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release}
DIR=${DIR:-/tmp/keyward-cluster}
PORT_BASE=${PORT_BASE:-17800}
ROUNDS=${ROUNDS:-2}
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
SAMPLES=${SAMPLES:-100}

for exe in keyward keyward-load; do
  [ -x "$BIN/$exe" ] || { echo "cluster.sh: no $BIN/$exe (cargo build --release)" >&2; exit 1; }
done
rm -rf "$DIR"
mkdir -p "$DIR"

random() { python3 -c "import secrets, sys; print(''.join(secrets.choice(sys.argv[1]) for _ in range($1)))" "$2"; }
export KEYWARD_DEV_ACCESS_KEY_ID="AKIA$(random 16 ABCDEFGHIJKLMNOPQRSTUVWXYZ234567)"
export KEYWARD_DEV_SECRET_ACCESS_KEY="$(random 40 abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789)"
export KEYWARD_DEV_OPERATOR_ACCESS_KEY_ID="AKIA$(random 16 ABCDEFGHIJKLMNOPQRSTUVWXYZ234567)"
export KEYWARD_DEV_OPERATOR_SECRET_ACCESS_KEY="$(random 40 abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789)"
export RUST_LOG=warn

declare -a PROXY ENCLAVE
KEYWARD_TEST_POSTGRES_DIR=
cleanup() {
  stop_nodes
  if [ -n "$KEYWARD_TEST_POSTGRES_DIR" ]; then bash .ci/postgres.sh stop "$KEYWARD_TEST_POSTGRES_DIR"; fi
}
trap cleanup EXIT

eval "$(bash .ci/postgres.sh start)"
POSTMASTER=$(head -n 1 "$KEYWARD_TEST_POSTGRES_DIR/data/postmaster.pid")

# Node i: `keyward dev` on the shared store, its own ports and data dir;
# waits for its ready line.
start_node() {
  local i=$1 dir=$DIR/node$1
  mkdir -p "$dir"
  : >"$dir/stdout"
  # Node 1 creates the deployment (its dev custodian); nodes 2 and 3 have
  # no share and join the cluster from a Ready peer (docs/custody.md,
  # "keyward dev").
  "$BIN/keyward" dev --store "$KEYWARD_TEST_POSTGRES_URL" \
    --listen "127.0.0.1:$((PORT_BASE + i))" --admin-listen "127.0.0.1:$((PORT_BASE + 10 + i))" \
    --data-dir "$dir/data" --tenant-rate-limit 4000000000 >>"$dir/stdout" 2>>"$dir/stderr" &
  PROXY[i]=$!
  local deadline=$((SECONDS + 120))
  until grep -q 'Keyward is ready at' "$dir/stdout"; do
    if ! kill -0 "${PROXY[i]}" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
      echo "cluster.sh: node $i did not start (see $dir/stderr)" >&2
      exit 1
    fi
    sleep 0.1
  done
  ENCLAVE[i]=$(sed -n 's/.*enclave process started: pid \([0-9]*\).*/\1/p' "$dir/stdout" | tail -n 1)
  : >"$dir/stdout"
}

stop_nodes() {
  local i
  for i in "${!PROXY[@]}"; do
    kill -TERM "${PROXY[i]}" 2>/dev/null || true
    wait "${PROXY[i]}" 2>/dev/null || true
    # The enclave goes with its proxy; make sure before the next run.
    if [ -n "${ENCLAVE[i]:-}" ] && kill -0 "${ENCLAVE[i]}" 2>/dev/null; then
      sleep 1
      kill -KILL "${ENCLAVE[i]}" 2>/dev/null || true
    fi
  done
  PROXY=()
  ENCLAVE=()
}

# The first $1 nodes: ENDPOINTS, PIDS (keyward-load --pid) and $DIR/ca.pem
# (every node's CA).
start_nodes() {
  local i n=$1
  ENDPOINTS= PIDS=
  : >"$DIR/ca.pem"
  for i in $(seq "$n"); do
    start_node "$i"
    cat "$DIR/node$i/data/tls/ca.pem" >>"$DIR/ca.pem"
    ENDPOINTS+="${ENDPOINTS:+,}https://127.0.0.1:$((PORT_BASE + i))"
    PIDS+="${PIDS:+,}proxy=${PROXY[i]},enclave=${ENCLAVE[i]}"
  done
}

state() {
  echo "== $* | $(date -u +%H:%M:%S) UTC | uptime:$(uptime | sed 's/.*load average/ load average/')"
}

echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' (+ uncommitted changes)'), $(nproc) cores, $(uname -r), nice $(nice)"
echo "PostgreSQL $("$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/postgres" --version | awk '{print $3}') at $KEYWARD_TEST_POSTGRES_URL"

for round in $(seq "$ROUNDS"); do
  for n in 1 2 3; do
    start_nodes "$n"
    state "round $round, $n node(s)"
    "$BIN/keyward-load" --endpoint "$ENDPOINTS" --ca-bundle "$DIR/ca.pem" --no-baseline \
      --op mixed,create-key --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" \
      --pid "$PIDS" --pid-tree "postgres=$POSTMASTER" | tee "$DIR/load-n$n-r$round.txt"
    stop_nodes
  done
done

start_nodes 3
state "invalidation, idle, node 1 -> node 2 ($SAMPLES samples)"
"$BIN/keyward-load" --endpoint "https://127.0.0.1:$((PORT_BASE + 1)),https://127.0.0.1:$((PORT_BASE + 2))" \
  --ca-bundle "$DIR/ca.pem" --invalidation "$SAMPLES" | tee "$DIR/invalidation-idle.txt"

# Under load: mixed load on all three nodes at half the connections, from a
# second client, for longer than the samples take (stopped after them).
"$BIN/keyward-load" --endpoint "$ENDPOINTS" --ca-bundle "$DIR/ca.pem" --no-baseline --op mixed \
  --concurrency $((CONCURRENCY / 2)) --duration 600 --warmup 0 >"$DIR/background-load.txt" 2>&1 &
background=$!
sleep 3
state "invalidation, under load, node 1 -> node 3 ($SAMPLES samples)"
"$BIN/keyward-load" --endpoint "https://127.0.0.1:$((PORT_BASE + 1)),https://127.0.0.1:$((PORT_BASE + 3))" \
  --ca-bundle "$DIR/ca.pem" --invalidation "$SAMPLES" | tee "$DIR/invalidation-loaded.txt"
kill -TERM "$background" 2>/dev/null || true
wait "$background" 2>/dev/null || true
state "done"
