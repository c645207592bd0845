package idempotency

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// ClaimRequest asks to own one job's key for a lease.
type ClaimRequest struct {
	JobID       string
	Kind        string
	Key         string
	PayloadHash []byte
	EnqueuedAt  time.Time
	// FallbackOf is the job this one replaces, for a job published by a fallback.
	FallbackOf string
	// Lease is how long the claim holds without a heartbeat, on the database clock.
	Lease time.Duration
}

// ClaimStatus says what a claim found.
type ClaimStatus int

const (
	// Claimed: the caller owns the key until the lease ends; run the job.
	Claimed ClaimStatus = iota + 1
	// Busy: another owner holds a live lease, or the key's next attempt is not due yet. Wait
	// ClaimResult.Wait and try again (NakWithDelay).
	Busy
	// AlreadySucceeded: the key's effect is done (by ClaimResult.Owner). Ack without running.
	AlreadySucceeded
	// AlreadyDead: the key is dead (ClaimResult.Reason). Do not run.
	AlreadyDead
	// PayloadMismatch: the key was used before with a different payload. Permanent.
	PayloadMismatch
	// Invalid: the request cannot be stored; dead-letter the message as malformed without
	// touching the ledger's keys (design rule 28). ClaimResult.Reason says why: its kind, key
	// or job id (or the job it falls back from) is not valid UTF-8 without NUL within
	// queue.MaxKeyLen or queue.MaxIDLen bytes, or it has no payload hash. AddRecords can record
	// the job: it stores it under a stand-in id that Status finds again.
	Invalid
)

func (s ClaimStatus) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case Busy:
		return "busy"
	case AlreadySucceeded:
		return "already_succeeded"
	case AlreadyDead:
		return "already_dead"
	case PayloadMismatch:
		return "payload_mismatch"
	case Invalid:
		return "invalid"
	}
	return fmt.Sprintf("ClaimStatus(%d)", int(s))
}

// ClaimResult is the answer to one ClaimRequest, in the same position.
type ClaimResult struct {
	Status ClaimStatus
	// Fence identifies this ownership; pass it to every later write. Set when Claimed.
	Fence int64
	// Attempts counts attempts on the key including this one. Set when Claimed.
	Attempts int
	// Owner is the job id that owns (or finished) the key. Set unless Claimed.
	Owner string
	// Reason is the dead reason when AlreadyDead, and why the request cannot be stored when
	// Invalid.
	Reason string
	// Wait is how long to wait before trying again when Busy.
	Wait time.Duration
}

// busyRaceWait is the retry delay when a key appeared between our snapshot and our insert.
const busyRaceWait = time.Second

// Claim claims the keys of reqs in one statement and returns one result per request, in order.
// A key that appears more than once in reqs is claimed for its first request only; the others
// are Busy. A request the ledger cannot store is Invalid, and is not sent: it never fails the
// others (design rule 28). A statement that meets a deadlock or a serialization failure is
// tried again (design rule 31).
func (l *Ledger) Claim(ctx context.Context, reqs []ClaimRequest) ([]ClaimResult, error) {
	results := make([]ClaimResult, len(reqs))
	if len(reqs) == 0 {
		return results, nil
	}
	var (
		idx      = make([]int, 0, len(reqs))
		jobIDs   = make([]string, 0, len(reqs))
		kinds    = make([]string, 0, len(reqs))
		keys     = make([]string, 0, len(reqs))
		hashes   = make([][]byte, 0, len(reqs))
		enqueued = make([]time.Time, 0, len(reqs))
		leases   = make([]float64, 0, len(reqs))
		fallOf   = make([]*string, 0, len(reqs))
	)
	// Requests are sorted by (kind, key) in byte order, so that the first request of a key is
	// found and the statement's rows are numbered in the order its insert takes them: the
	// order every statement locks keys in (design rule 31).
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(strings.Compare(reqs[a].Kind, reqs[b].Kind), strings.Compare(reqs[a].Key, reqs[b].Key))
	})
	var prev *ClaimRequest // the last request sent: in this order a key's requests are adjacent
	for _, i := range order {
		r := &reqs[i]
		if why := invalidClaim(*r); why != "" {
			results[i] = ClaimResult{Status: Invalid, Reason: why}
			continue
		}
		if prev != nil && prev.Kind == r.Kind && prev.Key == r.Key {
			results[i] = ClaimResult{Status: Busy, Wait: busyRaceWait}
			continue
		}
		prev = r
		idx = append(idx, i)
		jobIDs = append(jobIDs, r.JobID)
		kinds = append(kinds, r.Kind)
		keys = append(keys, r.Key)
		hashes = append(hashes, r.PayloadHash)
		enq := r.EnqueuedAt
		if enq.IsZero() {
			enq = time.Now()
		}
		enqueued = append(enqueued, enq)
		leases = append(leases, r.Lease.Seconds())
		if r.FallbackOf != "" {
			fallOf = append(fallOf, &r.FallbackOf)
		} else {
			fallOf = append(fallOf, nil)
		}
	}

	if len(idx) == 0 {
		return results, nil
	}
	err := l.retryLocks(ctx, func() error {
		rows, err := l.pool.Query(ctx, l.q.claim, jobIDs, kinds, keys, hashes, enqueued, leases, fallOf)
		if err != nil {
			return err
		}
		defer rows.Close()
		// One row and one list of destinations for the statement: scanning into pointers made
		// an allocation per column and row, and each Scan call its own list.
		var row claimRow
		dest := []any{&row.ord, &row.fence, &row.attempts, &row.state, &row.owner, &row.sameHash,
			&row.leaseLeft, &row.dueLeft, &row.why}
		for rows.Next() {
			if err := rows.Scan(dest...); err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			results[idx[row.ord-1]] = row.interpret()
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim %d keys: %w", len(jobIDs), err)
	}
	return results, nil
}

// claimRow is one row of the claim statement's answer.
type claimRow struct {
	ord                int
	fence              pgtype.Int8
	attempts           pgtype.Int4
	state, owner, why  pgtype.Text
	sameHash           pgtype.Bool
	leaseLeft, dueLeft pgtype.Float8
}

func (r *claimRow) interpret() ClaimResult {
	if r.fence.Valid {
		return ClaimResult{Status: Claimed, Fence: r.fence.Int64, Attempts: int(r.attempts.Int32)}
	}
	if !r.state.Valid {
		// The row was inserted by another transaction after our snapshot: it is being worked.
		return ClaimResult{Status: Busy, Wait: busyRaceWait}
	}
	res := ClaimResult{Owner: r.owner.String}
	switch state := r.state.String; {
	case r.sameHash.Valid && !r.sameHash.Bool:
		res.Status = PayloadMismatch
	case state == "succeeded":
		res.Status = AlreadySucceeded
	case state == "dead":
		res.Status = AlreadyDead
		res.Reason = r.why.String
	case state == "running" && r.leaseLeft.Valid:
		res.Status = Busy
		res.Wait = secondsAtLeast(r.leaseLeft.Float64, 100*time.Millisecond)
	case state == "retrying" && r.dueLeft.Valid:
		res.Status = Busy
		res.Wait = secondsAtLeast(r.dueLeft.Float64, 100*time.Millisecond)
	default:
		res.Status = Busy
		res.Wait = busyRaceWait
	}
	return res
}

func secondsAtLeast(s float64, min time.Duration) time.Duration {
	d := time.Duration(s * float64(time.Second))
	return max(d, min)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
