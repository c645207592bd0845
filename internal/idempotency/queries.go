package idempotency

import "strings"

// queries holds the ledger's SQL with the schema name filled in once, at New.
type queries struct {
	claim, heartbeat, finish, addRecords, reapKeys, reapRecords, reapAttempts, status, ping string
	deleteRecord, lockKeyOwner, lockKeyLease, revive, markDead                              string
	markSolo, lockLastChance, addRequeue, reapLastChances, forgetLastChance                 string
	unmarkSolo                                                                              string
	keysGrowth, analyzeKeys                                                                 string
	scheduledQueries
}

// scheduledQueries are the statements of the scheduled and periodic tables (scheduled.go,
// periodic.go).
type scheduledQueries struct {
	dueJobs, dispatched, dispatchFailed, untilDue                   string
	scheduledByID, runScheduledNow                                  string
	countScheduled                                                  string
	lockPeriodic, lockPeriodicNow, upsertPeriodic, redefinePeriodic string
	duePeriodic, advancePeriodic, listPeriodic, pausePeriodic       string
	deletePeriodic, holdPeriodic                                    string
}

func newQueries(schema string) queries {
	s := func(q string) string { return strings.ReplaceAll(q, "S.", schema+".") }
	return queries{
		// Claim: insert or take over each key in one statement (design rule 9). A key is taken
		// over only when its payload hash matches and it is retrying and due, or running with an
		// expired lease. Rows not claimed come back with the key's current state, read from the
		// statement's snapshot, so the caller can tell duplicate, dead, busy and mismatch apart.
		// The insert takes its rows in (kind, key) order, so it locks the keys it meets (a
		// conflict locks the row even when the takeover's WHERE refuses it) in the order every
		// other statement locks them (design rule 31).
		claim: s(`
WITH req AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::timestamptz[], $6::float8[], $7::text[])
        WITH ORDINALITY AS r(job_id, kind, key, hash, enqueued_at, lease_s, fallback_of, ord)
), ins AS (
    INSERT INTO S.keys AS k (kind, key, job_id, payload_hash, state, fence, attempts, lease_until, enqueued_at, started_at, fallback_of)
    SELECT kind, key, job_id, hash, 'running', 1, 1, now() + make_interval(secs => lease_s), LEAST(enqueued_at, now()), now(), fallback_of
    FROM req
    ORDER BY kind COLLATE "C", key COLLATE "C"
    ON CONFLICT (kind, key) DO UPDATE SET
        job_id = EXCLUDED.job_id,
        state = 'running',
        fence = k.fence + 1,
        attempts = k.attempts + 1,
        lease_until = EXCLUDED.lease_until,
        next_attempt_at = NULL,
        enqueued_at = EXCLUDED.enqueued_at,
        fallback_of = EXCLUDED.fallback_of,
        started_at = now(),
        updated_at = now()
    WHERE k.payload_hash = EXCLUDED.payload_hash
      AND ((k.state = 'retrying' AND (k.next_attempt_at IS NULL OR k.next_attempt_at <= now()))
        OR (k.state = 'running' AND k.lease_until <= now()))
    RETURNING k.kind, k.key, k.fence, k.attempts
)
SELECT req.ord, ins.fence, ins.attempts, cur.state, cur.job_id, cur.payload_hash = req.hash,
       extract(epoch FROM cur.lease_until - now())::float8,
       extract(epoch FROM cur.next_attempt_at - now())::float8,
       cur.reason
FROM req
LEFT JOIN ins ON ins.kind = req.kind AND ins.key = req.key
-- A lateral primary-key lookup per request, so that the plan never scans the whole ledger
-- (a plain join was planned as a sequential scan on a young, unanalyzed table).
-- The lookup is made only for a request the insert did not claim (a one-time filter: OFFSET 0
-- keeps the subquery from being flattened into a join filter applied after the lookup).
LEFT JOIN LATERAL (
    SELECT k.state, k.job_id, k.payload_hash, k.lease_until, k.next_attempt_at, k.reason
    FROM S.keys k WHERE ins.kind IS NULL AND k.kind = req.kind AND k.key = req.key
    OFFSET 0
) cur ON true`),

		// Heartbeat: extend the leases still held (fenced, design rule 10). The rows are locked
		// first, in (kind, key) order (design rule 31): LockRows sits above the Sort, whatever
		// order the update's plan then visits them in.
		// Heartbeat: a row another statement holds locked is skipped, not waited for (a
		// handler's own transaction committing its outcome holds its key's row, and must not
		// stall every lease of the kind): the answer per lease is 1 extended, 2 lost (the
		// fence moved on, or the key is no longer running, as of the statement's snapshot),
		// or neither (skipped: unknown, try again).
		heartbeat: s(`
WITH l AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS l(kind, key, fence, ord)
), locked AS MATERIALIZED (
    SELECT l.* FROM S.keys k JOIN l ON k.kind = l.kind AND k.key = l.key
    WHERE k.fence = l.fence AND k.state = 'running'
    ORDER BY k.kind COLLATE "C", k.key COLLATE "C"
    FOR UPDATE OF k SKIP LOCKED
), upd AS (
    -- Joined to the locked leases only, each key once (as the finish is).
    UPDATE S.keys k SET lease_until = now() + make_interval(secs => $4), updated_at = now()
    FROM locked l
    WHERE k.kind = l.kind AND k.key = l.key AND k.fence = l.fence AND k.state = 'running'
    RETURNING l.ord
)
SELECT ord, 1 FROM upd
UNION ALL
SELECT l.ord, 2 FROM l LEFT JOIN S.keys k ON k.kind = l.kind AND k.key = l.key
WHERE k.kind IS NULL OR k.fence <> l.fence OR k.state <> 'running'`),

		// Finish: every write is fenced (design rule 10); a zombie's outcome matches no row.
		// The keys' rows are locked first, in (kind, key) order (design rule 31), as the
		// heartbeat locks them; the lock returns each row as last committed, after waiting for
		// any statement that held it. An outcome is reported applied when it is written now, or
		// when its key already holds it, same fence and same state: an earlier try of this
		// commit landed and only its answer was lost (design rule 30). A key whose fence moved
		// on holds another claim's state, and is not reported. The locked rows carry their
		// outcomes, so the update joins each key once; joined to the outcomes again, it was
		// planned as a nested loop over all of them per key (64² comparisons for a group of 64,
		// 60% of the statement's time).
		finish: s(`
WITH o AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::float8[], $9::bool[], $10::text[], $11::text[], $12::text[])
        WITH ORDINALITY AS o(kind, key, fence, state, result, reason, error, retry_in, release, fallback_to, attempt, worker, ord)
), locked AS MATERIALIZED (
    SELECT o.*, k.fence AS held_fence, k.state AS held_state
    FROM S.keys k JOIN o ON k.kind = o.kind AND k.key = o.key
    ORDER BY k.kind COLLATE "C", k.key COLLATE "C"
    FOR UPDATE OF k
), upd AS (
    UPDATE S.keys k SET
        state = o.state,
        result = CASE WHEN o.state = 'succeeded' THEN o.result::jsonb ELSE k.result END,
        reason = o.reason,
        last_error = COALESCE(o.error, k.last_error),
        next_attempt_at = CASE WHEN o.state = 'retrying' THEN statement_timestamp() + make_interval(secs => o.retry_in) END,
        lease_until = NULL,
        attempts = CASE WHEN o.release THEN greatest(k.attempts - 1, 0) ELSE k.attempts END,
        first_failed_at = CASE WHEN o.error IS NOT NULL THEN COALESCE(k.first_failed_at, statement_timestamp()) ELSE k.first_failed_at END,
        finished_at = CASE WHEN o.state IN ('succeeded', 'dead') THEN statement_timestamp() END,
        fallback_to = COALESCE(o.fallback_to, k.fallback_to),
        worker = COALESCE(o.worker, k.worker),
        updated_at = statement_timestamp()
    FROM locked o
    WHERE k.kind = o.kind AND k.key = o.key AND k.fence = o.fence AND k.state = 'running'
    RETURNING o.ord, k.job_id, k.fence, k.kind, CASE WHEN o.release THEN k.attempts + 1 ELSE k.attempts END AS n,
        k.started_at, o.attempt, o.error, o.worker
), att AS (
    -- The attempt's row, in the same statement: an attempt costs no transaction of its own.
    -- A success's attempt is its key's row (migration 00005).
    INSERT INTO S.attempts (job_id, fence, kind, n, started_at, finished_at, outcome, error, worker)
    SELECT job_id, fence, kind, n, COALESCE(started_at, statement_timestamp()), statement_timestamp(), attempt, error, worker
    FROM upd WHERE attempt IS NOT NULL AND attempt <> 'succeeded'
    ON CONFLICT DO NOTHING
)
SELECT ord FROM upd
UNION ALL
SELECT ord FROM locked WHERE held_fence = fence AND held_state = state`),

		addRecords: s(`
INSERT INTO S.job_records (id, kind, key, state, reason, last_error, duplicate_of, enqueued_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])
ON CONFLICT (id) DO NOTHING`),

		// The reaper never waits for a row another statement holds (SKIP LOCKED), so it cannot
		// take part in a deadlock, whatever order it meets its rows in (design rule 31).
		// Old keys are found through the listing index (migration 00006): a key finished
		// before the cutoff was enqueued (or created) before it too (the claim stores the
		// publisher's enqueued_at no later than the database's now()), so the scan reads the
		// keys enqueued before the cutoff, oldest first, and skips those not finished by then.
		reapKeys: s(`
DELETE FROM S.keys WHERE ctid IN (
    SELECT ctid FROM S.keys
    WHERE COALESCE(enqueued_at, created_at) < now() - make_interval(secs => $1)
      AND state IN ('succeeded', 'dead') AND finished_at < now() - make_interval(secs => $1)
    ORDER BY COALESCE(enqueued_at, created_at)
    LIMIT $2 FOR UPDATE SKIP LOCKED)`),

		reapRecords: s(`
DELETE FROM S.job_records WHERE ctid IN (
    SELECT ctid FROM S.job_records WHERE finished_at < now() - make_interval(secs => $1) LIMIT $2 FOR UPDATE SKIP LOCKED)`),

		// Status: the key the job owns comes first, then a record of a job that finished
		// without owning its key (it ran no attempt of its own: attempts 0; a duplicate of a
		// success reports the owner's result).
		reapAttempts: s(`
DELETE FROM S.attempts WHERE ctid IN (
    SELECT ctid FROM S.attempts WHERE finished_at < now() - make_interval(secs => $1) LIMIT $2 FOR UPDATE SKIP LOCKED)`),

		reapLastChances: s(`
DELETE FROM S.last_chances WHERE ctid IN (
    SELECT ctid FROM S.last_chances WHERE updated_at < now() - make_interval(secs => $1) LIMIT $2 FOR UPDATE SKIP LOCKED)`),

		// Last chances (see MarkSolo and MarkDead).
		markSolo: s(`
INSERT INTO S.last_chances (job_id, kind, solo_seq) VALUES ($1, $2, $3)
ON CONFLICT (job_id) DO UPDATE SET solo_seq = EXCLUDED.solo_seq, updated_at = now()`),
		lockLastChance: s(`
SELECT COALESCE(solo_seq = $2, false), requeues, COALESCE(last_requeue_seq = $2, false)
FROM S.last_chances WHERE job_id = $1 FOR UPDATE`),
		// One advisory settled twice (its worker died before the ack) counts once.
		addRequeue: s(`
INSERT INTO S.last_chances (job_id, kind, requeues, last_requeue_seq) VALUES ($1, $2, 1, $3)
ON CONFLICT (job_id) DO UPDATE SET
    requeues = S.last_chances.requeues + CASE WHEN S.last_chances.last_requeue_seq = $3 THEN 0 ELSE 1 END,
    last_requeue_seq = $3, updated_at = now()`),
		forgetLastChance: s(`DELETE FROM S.last_chances WHERE job_id = $1`),
		unmarkSolo:       s(`UPDATE S.last_chances SET solo_seq = NULL, updated_at = now() WHERE job_id = $1 AND solo_seq = $2`),

		// The rows Postgres counted at the last ANALYZE (-1: never), the live rows now, and
		// whether this role may ANALYZE the table (its owner; a superuser is).
		keysGrowth: s(`
SELECT c.reltuples::float8, COALESCE(st.n_live_tup, 0)::float8, pg_has_role(c.relowner, 'USAGE')
FROM pg_class c LEFT JOIN pg_stat_user_tables st ON st.relid = c.oid
WHERE c.oid = 'S.keys'::regclass`),
		analyzeKeys: s(`ANALYZE S.keys`),

		status: s(`
(SELECT 0 AS src, job_id, kind, key, state, attempts, reason, last_error, result::text, NULL::text AS duplicate_of,
        next_attempt_at, enqueued_at, started_at, finished_at, lease_until, fallback_of, fallback_to, first_failed_at
   FROM S.keys WHERE job_id = $1 ORDER BY updated_at DESC LIMIT 1)
UNION ALL
(SELECT 1, r.id, r.kind, r.key, r.state, 0, r.reason, r.last_error,
        CASE WHEN r.state = 'succeeded' THEN k.result::text END, r.duplicate_of,
        NULL, r.enqueued_at, NULL, r.finished_at, NULL, NULL, NULL, r.finished_at
   FROM S.job_records r LEFT JOIN S.keys k ON k.kind = r.kind AND k.key = r.key
  WHERE r.id = $1)
ORDER BY src LIMIT 1`),

		ping: s(`SELECT count(*) FROM (SELECT 1 FROM S.keys LIMIT 1) AS k`),

		deleteRecord: s(`DELETE FROM S.job_records WHERE id = $1`),
		lockKeyOwner: s(`SELECT state, job_id FROM S.keys WHERE kind = $1 AND key = $2 FOR UPDATE`),
		lockKeyLease: s(`SELECT state, job_id, COALESCE(lease_until > now(), false) FROM S.keys WHERE kind = $1 AND key = $2 FOR UPDATE`),
		revive: s(`
WITH revived AS (
    UPDATE S.keys SET state = 'retrying', attempts = 0, reason = NULL, last_error = NULL, next_attempt_at = NULL,
        lease_until = NULL, finished_at = NULL, first_failed_at = NULL, fallback_to = NULL, job_id = $3,
        payload_hash = COALESCE($4, payload_hash), fence = fence + 1, updated_at = now()
    WHERE kind = $1 AND key = $2 AND state = 'dead'
    RETURNING job_id, fence, kind)
INSERT INTO S.attempts (job_id, fence, kind, n, started_at, finished_at, outcome, error, worker)
SELECT job_id, fence, kind, 0, now(), now(), 'replayed', NULL, NULLIF($5, '') FROM revived
ON CONFLICT DO NOTHING`),
		markDead: s(`
UPDATE S.keys SET state = 'dead', reason = $3, last_error = $4, lease_until = NULL, next_attempt_at = NULL,
    finished_at = now(), first_failed_at = COALESCE(first_failed_at, now()), fence = fence + 1, updated_at = now()
WHERE kind = $1 AND key = $2`),

		scheduledQueries: newScheduledQueries(s),
	}
}

func newScheduledQueries(s func(string) string) scheduledQueries {
	return scheduledQueries{
		// The due jobs no other dispatcher holds, oldest first (design rule 42), with how late
		// each is on the database's clock.
		dueJobs: s(`
SELECT id, kind, key, payload, max_attempts, run_at, origin, EXTRACT(epoch FROM now() - run_at)::float8
FROM S.scheduled WHERE run_at <= now()
ORDER BY run_at LIMIT $1
FOR UPDATE SKIP LOCKED`),
		dispatched: s(`DELETE FROM S.scheduled WHERE id = ANY($1::text[])`),
		// A failed publish is tried again after a backoff (0.2 s doubling to 5 s), so that a
		// job that cannot be published does not hold its dispatchers in a loop: its run_at
		// moves on, and status shows the error.
		dispatchFailed: s(`
UPDATE S.scheduled AS s SET dispatch_errors = s.dispatch_errors + 1, last_error = f.msg,
    run_at = now() + make_interval(secs => least(5, 0.2 * power(2, least(s.dispatch_errors, 10))))
FROM unnest($1::text[], $2::text[]) AS f(id, msg) WHERE s.id = f.id`),
		untilDue: s(`
SELECT EXTRACT(epoch FROM (SELECT min(run_at) FROM S.scheduled) - now())::float8,
       EXTRACT(epoch FROM (SELECT min(GREATEST(next_run, held_until)) FROM S.periodic WHERE NOT paused) - now())::float8`),
		scheduledByID: s(`SELECT ` + scheduledColumns + ` FROM S.scheduled WHERE id = $1`),
		runScheduledNow: s(`
WITH u AS (
    UPDATE S.scheduled SET run_at = LEAST(run_at, now()) WHERE id = $1
    RETURNING id, kind, key, run_at, origin
)
SELECT u.id, u.kind, u.key, u.run_at, u.origin FROM u, LATERAL (SELECT pg_notify($2, '')) AS n`),
		countScheduled: s(`SELECT kind, count(*) FROM S.scheduled GROUP BY kind`),

		upsertPeriodic:   s(`INSERT INTO S.periodic (name, def, next_run) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`),
		lockPeriodic:     s(`SELECT def::text FROM S.periodic WHERE name = $1 FOR UPDATE`),
		lockPeriodicNow:  s(`SELECT def::text, now() FROM S.periodic WHERE name = $1 FOR UPDATE`),
		redefinePeriodic: s(`UPDATE S.periodic SET def = $2, next_run = COALESCE($3, next_run), held_until = NULL, updated_at = now() WHERE name = $1`),
		// The due entries no other dispatcher holds (design rule 45), with the database's
		// clock, by which their ticks are counted.
		duePeriodic: s(`
SELECT name, def::text, next_run, now() FROM S.periodic
WHERE NOT paused AND next_run <= now() AND (held_until IS NULL OR held_until <= now())
ORDER BY next_run LIMIT 100
FOR UPDATE SKIP LOCKED`),
		advancePeriodic: s(`UPDATE S.periodic SET next_run = $2, last_run = COALESCE($3, last_run), held_until = NULL, updated_at = now() WHERE name = $1`),
		holdPeriodic:    s(`UPDATE S.periodic SET held_until = now() + make_interval(secs => $2) WHERE name = $1`),
		deletePeriodic:  s(`DELETE FROM S.periodic WHERE name = $1`),
		listPeriodic:    s(`SELECT name, def::text, next_run, last_run, paused, updated_at FROM S.periodic ORDER BY name`),
		pausePeriodic: s(`
UPDATE S.periodic SET paused = $2, next_run = CASE WHEN paused THEN COALESCE($3, next_run) ELSE next_run END, updated_at = now()
WHERE name = $1
RETURNING next_run, last_run, paused, updated_at`),
	}
}
