#!/usr/bin/env bash
# bench-durable: Levee's figures with NATS in its default durability and in the durable
# profile (`sync_interval: always`: every write to the stream is fsynced before it is
# acknowledged), side by side. Both servers are NATS 2.15 (the nats-server/v2 library, run as
# internal/chaos/natsd, because the Debian nats-server 2.9 rejects sync_interval), on loopback
# ports of their own with stores in a temporary directory; the Postgres is the usual one.
#
#   scripts/bench-durable.sh                 # make bench-durable
#   ROUNDS=5 BENCH_JOBS=20000 LEVEE_BENCH_FLAGS="--workers 2" scripts/bench-durable.sh
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
ROUNDS=${ROUNDS:-3}
BENCH_JOBS=${BENCH_JOBS:-20000}
DATABASE_URL=${LEVEE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

$GO build -o "$tmp/natsd" ./internal/chaos/natsd
$GO build -o "$tmp/enqueue" ./cmd/enqueue

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_nats NAME SYNC_LINE: starts natsd with its own store and sets url to its URL. (Not
# called in $(...): the pid must be recorded in this shell for the cleanup.)
start_nats() {
  local name=$1 sync=$2 port
  port=$(free_port)
  mkdir -p "$tmp/$name"
  cat >"$tmp/$name.conf" <<CONF
listen: 127.0.0.1:$port
jetstream {
  store_dir: "$tmp/$name"
  $sync
}
CONF
  "$tmp/natsd" -c "$tmp/$name.conf" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      url="nats://127.0.0.1:$port"
      return
    fi
    sleep 0.1
  done
  echo "natsd ($name) did not start; its log:" >&2
  cat "$tmp/$name.log" >&2
  exit 1
}

start_nats default ""
default_url=$url
start_nats durable "sync_interval: always"
durable_url=$url
echo "NATS 2.15 default at $default_url, sync_interval: always at $durable_url" >&2

bench="$tmp/enqueue bench --json --jobs $BENCH_JOBS --database-url $DATABASE_URL ${LEVEE_BENCH_FLAGS:-}"
$GO run ./tools/benchcompare --rounds "$ROUNDS" --names "default,always" --nats-process natsd \
  --levee "$bench --nats-url $default_url" --river "$bench --nats-url $durable_url"
