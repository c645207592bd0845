#!/usr/bin/env bash
# The Levee tour behind `make demo`: a worker, a downstream that fails some calls, a mix of
# jobs, their statuses, the dead-letter queue, a replay, and the metrics that moved. It uses
# the NATS and Postgres at LEVEE_NATS_URL / LEVEE_DATABASE_URL (the local ones by default),
# a namespace of its own (DEMO_NAMESPACE, default "demo") and free loopback ports, and stops
# everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

export LEVEE_NATS_URL="${LEVEE_NATS_URL:-nats://127.0.0.1:4222}"
export LEVEE_DATABASE_URL="${LEVEE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
NS="${DEMO_NAMESPACE:-demo}"
export LEVEE_NAMESPACE="$NS"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ./bin/demo reset "$NS" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
enqueue() { ./bin/enqueue "$@"; }

go build -o bin/worker ./cmd/worker
go build -o bin/enqueue ./cmd/enqueue
go build -o bin/demo ./tools/demo
./bin/demo reset "$NS"
DOWNSTREAM=127.0.0.1:$(./bin/demo freeport)
HTTP_ADDR=127.0.0.1:$(./bin/demo freeport)

# alive PID WHAT fails the demo at once when a process it started has exited (a port taken
# meanwhile, say), rather than going on against someone else's server.
alive() {
  if ! kill -0 "$1" 2>/dev/null; then
    echo "demo: $2 exited; see above (is its port taken?)" >&2
    exit 1
  fi
}

say "A downstream on $DOWNSTREAM: /ok succeeds, /flaky answers 503 twice per key, /reject 400, /fixable 422 until fixed"
./bin/demo downstream "$DOWNSTREAM" & pids+=($!)
sleep 0.3
alive "${pids[-1]}" "the downstream"

cat > "$work/levee.yaml" <<YAML
kinds:
  charge:
    handler: http
    max_attempts: 4
    timeout: 5s
    backoff: {base: 200ms, max: 1s}
    rate: 20/s
    http:
      allow: ["http://$DOWNSTREAM/"]
YAML
say "The worker's policy (worker --check-config)"
./bin/worker --config "$work/levee.yaml" --check-config

say "Start a worker (logs in $work/worker.log)"
./bin/worker --config "$work/levee.yaml" --http-addr "$HTTP_ADDR" --log-level warn 2>"$work/worker.log" & pids+=($!)
worker_pid=${pids[-1]}
for _ in $(seq 1 50); do
  alive "$worker_pid" "the worker (its log: $(tail -n 3 "$work/worker.log" 2>/dev/null))"
  ./bin/worker health --url "http://$HTTP_ADDR/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
./bin/worker health --url "http://$HTTP_ADDR/readyz"

say "Publish a mix of jobs"
ok1=$(enqueue publish charge "{\"url\":\"http://$DOWNSTREAM/ok\",\"body\":{\"amount\":100}}" --key order-1)
ok2=$(enqueue publish charge "{\"url\":\"http://$DOWNSTREAM/ok\",\"body\":{\"amount\":200}}" --key order-2)
dup=$(enqueue publish charge "{\"url\":\"http://$DOWNSTREAM/ok\",\"body\":{\"amount\":100}}" --key order-1)
flaky=$(enqueue publish charge "{\"url\":\"http://$DOWNSTREAM/flaky\",\"body\":{\"amount\":300}}" --key order-3)
reject=$(enqueue publish charge "{\"url\":\"http://$DOWNSTREAM/reject\",\"body\":{\"amount\":-1}}" --key order-4)
fixable=$(enqueue publish charge "{\"url\":\"http://$DOWNSTREAM/fixable\",\"body\":{\"amount\":500}}" --key order-5)
echo "ok: $ok1 $ok2   same key as order-1: $dup   flaky: $flaky   rejected: $reject   fixable: $fixable"

say "Wait for each to finish (enqueue status --wait)"
for id in "$ok1" "$ok2" "$dup" "$flaky" "$reject" "$fixable"; do
  st=$(enqueue status "$id" --wait 20s --json || true)
  echo "$st" | sed -E 's/.*"state":"([a-z]+)".*"key":"([^"]*)".*"attempts":([0-9]+),"reason":"([^"]*)".*"duplicate_of":"([^"]*)".*/'"$id"'  state=\1 key=\2 attempts=\3 reason=\4 duplicate_of=\5/'
done

say "The flaky job in full: retried with Retry-After, succeeded once"
enqueue status "$flaky"

say "The dead-letter queue"
enqueue dlq list
enqueue dlq show "$fixable"

say "Fix the downstream, then replay the fixable job (same key, fresh attempt budget)"
curl -fsS -X POST "http://$DOWNSTREAM/admin/fix"
enqueue dlq replay "$fixable"
enqueue status "$fixable" --wait 20s
enqueue dlq list || true

say "Queue statistics"
enqueue stats

say "Metrics that moved (GET /metrics)"
curl -fsS "http://$HTTP_ADDR/metrics" | grep -E '^levee_(jobs_finished_total|attempts_total)\{' | sort

say "Stop the worker with SIGTERM: it drains and exits 0"
kill -TERM "${pids[1]}"
wait "${pids[1]}" && echo "worker exited 0"
pids=("${pids[0]}")
say "Demo done"
