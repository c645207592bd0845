-- +goose Up

-- last_chances tells a poison message from its bystanders (design rule 6). A worker that
-- holds a message on its last delivery (or a job whose attempts were all lost with their
-- workers) runs it alone in its process and marks it here first (solo_seq: the message's
-- sequence in the work stream). When that message's deliveries then run out, the job
-- crashed or hung a worker while nothing else ran there: it is dead-lettered. A job whose
-- message has no such mark never had its turn alone (it was only held by workers that
-- crashed on something else): it is published again, at most twice (requeues; one advisory
-- retried counts once: last_requeue_seq). A replay starts afresh (the row is deleted).
CREATE TABLE last_chances (
    job_id           text        PRIMARY KEY,
    kind             text        NOT NULL,
    solo_seq         bigint,
    requeues         integer     NOT NULL DEFAULT 0,
    last_requeue_seq bigint,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE last_chances;
