// Package worker runs jobs: for each kind it admits attempts, pulls exactly that many messages,
// claims their keys in the ledger in one statement, runs the handlers through the kind's
// executor pipeline, commits each outcome (fenced) and only then acks, naks or terms.
//
//	pull loop per kind:  Admit(n) ─▶ Fetch(n) ─▶ Claim(batch) ─▶ attempt goroutines
//	attempt:             Execute(timeout, handler) ─▶ Finish(fenced) ─▶ Ack | NakWithDelay | DLQ+Term
//	heartbeat per kind:  every AckWait/3: Heartbeat(leases) ─▶ InProgress, or cancel lost ones
//
// Shutdown is soft first: stop pulling, let attempts finish (still heartbeating) until the
// shutdown timeout, then cancel what is left, release its keys and nak it for redelivery.
package worker
