-- +goose Up

-- attempts is each job's attempt timeline: one row per claim that ended in an outcome (a
-- claim's fence is unique for its key, so (job_id, fence) names one attempt). Rows are
-- written by the same statement as the outcome, in the worker's group commit: no transaction
-- of their own. A claim that lost its lease writes nothing, so neither does its attempt.
CREATE TABLE attempts (
    job_id      text        NOT NULL,
    fence       bigint      NOT NULL,
    kind        text        NOT NULL,
    n           integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome     text        NOT NULL,
    error       text,
    worker      text,
    PRIMARY KEY (job_id, fence)
);

-- The dashboard's last-hour aggregates (per kind, per minute) and the reaper read by it. Rows
-- arrive in finished_at order, so a BRIN index (a few pages, summarised as the table grows)
-- serves these range scans at almost no cost per insert, unlike a btree.
CREATE INDEX attempts_finished_at_idx ON attempts USING brin (finished_at);

-- audit_log records every operator action (CLI or dashboard) with who did it. Never reaped.
CREATE TABLE audit_log (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text        NOT NULL,
    action text        NOT NULL,
    target text        NOT NULL,
    detail text        NOT NULL DEFAULT ''
);

-- Job listing, newest first, with keyset paging on (enqueued time, id): one index scan per
-- table, merged, never OFFSET.
CREATE INDEX keys_listing_idx ON keys ((COALESCE(enqueued_at, created_at)) DESC, job_id DESC);
CREATE INDEX job_records_listing_idx ON job_records ((COALESCE(enqueued_at, finished_at)) DESC, id DESC);

-- Find by idempotency key across kinds: keys are found through their primary key, kind by
-- kind (a loose index scan); records need their own index.
CREATE INDEX job_records_key_idx ON job_records (key);

-- +goose Down
DROP INDEX job_records_key_idx;
DROP INDEX job_records_listing_idx;
DROP INDEX keys_listing_idx;
DROP TABLE audit_log;
DROP TABLE attempts;
