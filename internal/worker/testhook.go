//go:build chaos

// This file exists only in binaries built with the chaos build tag (the fault-injection
// suite builds its worker with -tags chaos). A production build has testhook_off.go instead,
// whose crashAt does nothing: no environment variable can make a production worker kill itself.

package worker

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// EnvTestCrash is read at start by a worker built with -tags chaos, for the fault-injection
// suite (internal/chaos). Production builds do not read it.
//
//	LEVEE_TEST_CRASH=after-call:<key-substring>
//	    kill -9 the process right after the handler returns (the downstream call is made) and
//	    before the outcome is committed, on the first attempt of a job whose idempotency key
//	    contains the substring. The redelivery (attempt 2) then runs normally.
//	LEVEE_TEST_CRASH=in-call:<key-substring>
//	    the same, on every attempt: a poison job whose handler crashes the worker each time.
//	LEVEE_TEST_CRASH=before-claim:<key-substring>
//	    kill -9 the process whenever a delivery of such a job is pulled, before its key is
//	    claimed: a poison message that crashes every worker that takes it, until JetStream's
//	    MaxDeliver stops it and the max-deliveries advisory dead-letters it.
//	LEVEE_TEST_CRASH=after-dispatch:<key-substring>
//	    kill -9 the process right after its dispatcher published a due job (delayed, periodic
//	    or transactional) whose idempotency key contains the substring, before the job's row
//	    is deleted: another dispatcher publishes it again (design rule 42). With
//	    LEVEE_TEST_CRASH_ONCE_DIR set, it fires once per key across every process that shares
//	    the directory (a file per key marks it), so that the job is then dispatched.
//
// Several hooks are separated by commas: before-claim:poison,in-call:crasher.
const EnvTestCrash = "LEVEE_TEST_CRASH"

// Crash points of EnvTestCrash.
const (
	crashAfterCall   = "after-call"
	crashInCall      = "in-call" // fires at crashAfterCall on every attempt
	crashBeforeClaim = "before-claim"
	// crashAfterDispatch is after a due job's publish, before its row is deleted.
	crashAfterDispatch = "after-dispatch"
)

// testCrash is the parsed EnvTestCrash; empty, it crashes nothing.
var testCrash = parseTestCrashes(os.Getenv(EnvTestCrash))

// crashOnceDir, if set, makes the after-dispatch hook fire once per key (see EnvTestCrash).
var crashOnceDir = os.Getenv("LEVEE_TEST_CRASH_ONCE_DIR")

// firstCrash reports whether no process sharing crashOnceDir crashed at point for key yet, and
// marks it.
func firstCrash(point, key string) bool {
	if crashOnceDir == "" {
		return true
	}
	name := filepath.Join(crashOnceDir, point+"-"+url.PathEscape(key))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return false
	}
	_ = f.Close()
	return true
}

// crashHooks are the hooks of EnvTestCrash.
type crashHooks []crashHook

func parseTestCrashes(v string) crashHooks {
	var hs crashHooks
	for part := range strings.SplitSeq(v, ",") {
		if h := parseTestCrash(part); h.point != "" {
			hs = append(hs, h)
		}
	}
	return hs
}

// crashAt kills the process when a hook of EnvTestCrash matches point and key.
func crashAt(point, key string, attempt int) { testCrash.at(point, key, attempt) }

// at runs every hook's at.
func (hs crashHooks) at(point, key string, attempt int) {
	for _, h := range hs {
		h.at(point, key, attempt)
	}
}

type crashHook struct {
	point string
	match string
}

func parseTestCrash(v string) crashHook {
	point, match, ok := strings.Cut(v, ":")
	if !ok || match == "" || (point != crashAfterCall && point != crashInCall && point != crashBeforeClaim && point != crashAfterDispatch) {
		return crashHook{}
	}
	return crashHook{point: point, match: match}
}

// at kills the process (SIGKILL, like kill -9: no deferred code, no drain) when the hook is set
// for point and key matches. attempt is the attempt number, or 0 before the claim.
func (h crashHook) at(point, key string, attempt int) {
	hookPoint := h.point
	if hookPoint == crashInCall {
		hookPoint = crashAfterCall
	}
	if hookPoint != point || !strings.Contains(key, h.match) {
		return
	}
	if h.point == crashAfterCall && attempt != 1 {
		return
	}
	if h.point == crashAfterDispatch && !firstCrash(point, key) {
		return
	}
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Kill()
		select {} // the signal is on its way; do nothing more meanwhile
	}
}
