-- +goose Up

-- scheduled holds the jobs that are not in the work stream yet (design rules 42-44): delayed
-- jobs (run_at in the future), jobs published in a caller's transaction (PublishTx: run_at is
-- that transaction's time, so they are due as soon as it commits) and the ticks of periodic
-- jobs. Every worker's dispatcher takes due rows FOR UPDATE SKIP LOCKED, publishes them with
-- the job id as the stream's message id, and deletes them in the same transaction: a worker
-- that dies in between leaves the rows to another, whose publish the stream (by id) and the
-- ledger (by key) deduplicate. payload is the job's compact JSON as it will be published.
CREATE TABLE scheduled (
    id              text        PRIMARY KEY,
    kind            text        NOT NULL,
    key             text        NOT NULL,
    payload         bytea       NOT NULL,
    max_attempts    integer     NOT NULL DEFAULT 0,
    run_at          timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    origin          text        NOT NULL,
    periodic        text,
    dispatch_errors integer     NOT NULL DEFAULT 0,
    last_error      text
);
CREATE INDEX scheduled_run_at_idx ON scheduled (run_at);

-- periodic holds each periodic job's definition (leveetype.PeriodicJob as JSON, as the last
-- worker that started with it wrote it: text, not jsonb, so that its payload is published byte
-- for byte as written) and its next tick. A tick is turned into a scheduled
-- row in the transaction that moves next_run on, under the row's lock, so each tick is
-- enqueued once across the fleet (design rule 45). A worker whose config lacks an entry never
-- deletes it.
CREATE TABLE periodic (
    name       text        PRIMARY KEY,
    def        text        NOT NULL,
    next_run   timestamptz NOT NULL,
    last_run   timestamptz,
    paused     boolean     NOT NULL DEFAULT false,
    -- held_until: a worker that could not read def (another version; a zone it lacks) leaves
    -- the due entry to others until then, without moving next_run (its tick is not lost).
    held_until timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX periodic_next_run_idx ON periodic (next_run) WHERE NOT paused;

-- +goose Down
DROP TABLE periodic;
DROP TABLE scheduled;
