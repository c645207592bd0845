#!/usr/bin/env bash
# bench-scale: how cost grows with work, for Levee and River at their defaults. Each point is
# one `tools/benchcompare` round (Levee and River back to back, publish and work phases only:
# --no-e2e): backlogs of SIZES jobs with one worker, and WORKERS workers (River: clients) on a
# backlog of WORKERS_JOBS. The rounds' JSON goes to OUT_DIR, then bench/scale draws
# docs/img/bench-scale.png (gonum/plot) and prints the table docs/performance.md shows.
#
#   scripts/bench-scale.sh                   # make bench-scale: about 15 minutes on 2 cores
#   SIZES="10000 100000" WORKERS="1 2" scripts/bench-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
SIZES=${SIZES:-10000 100000 1000000}
WORKERS=${WORKERS:-1 2 4}
WORKERS_JOBS=${WORKERS_JOBS:-100000}
OUT_DIR=${OUT_DIR:-docs/img/bench-scale}
export LEVEE_DATABASE_URL=${LEVEE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
export LEVEE_NATS_URL=${LEVEE_NATS_URL:-nats://127.0.0.1:4222}

mkdir -p bin "$OUT_DIR"
$GO build -o bin/enqueue ./cmd/enqueue
$GO build -o bin/benchcompare ./tools/benchcompare
(cd bench/river && $GO build -o bin/riverbench .)

point() { # point JOBS WORKERS
  local jobs=$1 workers=$2
  echo "bench-scale: $jobs jobs, $workers worker(s)" >&2
  bin/benchcompare --rounds 1 --json-out "$OUT_DIR/jobs$jobs-workers$workers.json" \
    --levee "bin/enqueue bench --json --no-e2e --jobs $jobs --workers $workers" \
    --river "bench/river/bin/riverbench --json --no-e2e --jobs $jobs --clients $workers" >&2
}

for n in $SIZES; do point "$n" 1; done
for w in $WORKERS; do
  [ "$w" = 1 ] && [[ " $SIZES " == *" $WORKERS_JOBS "* ]] && continue # measured above
  point "$WORKERS_JOBS" "$w"
done
(cd bench/scale && $GO run . --workers-jobs "$WORKERS_JOBS" --png ../../docs/img/bench-scale.png ../../"$OUT_DIR"/*.json)
