package dashboard

import (
	"sync"
	"time"
)

// Failed sign-ins are throttled: after maxFailedSignIns within signInWindow from one address,
// or for one user name, sign-ins from it (or as that user) are refused until the window has
// passed since the first of them.
const (
	maxFailedSignIns = 10
	signInWindow     = time.Minute
)

// maxThrottled bounds the keys a throttle keeps before it forgets those that block nothing
// (expired, or under the limit); a key that blocks is never forgotten early.
const maxThrottled = 100_000

// throttle counts failures by key in fixed windows that start at a key's first failure.
type throttle struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]*failures
}

type failures struct {
	n     int
	since time.Time
}

func newThrottle(limit int, window time.Duration) *throttle {
	return &throttle{max: limit, window: window, now: time.Now, seen: map[string]*failures{}}
}

// blocked returns how long sign-ins for any of keys are refused (0: not at all).
func (t *throttle) blocked(keys ...string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var wait time.Duration
	for _, k := range keys {
		f, ok := t.seen[k]
		if !ok {
			continue
		}
		if left := t.window - now.Sub(f.since); left <= 0 {
			delete(t.seen, k)
		} else if f.n >= t.max {
			wait = max(wait, left)
		}
	}
	return wait
}

// failed counts one failure for each of keys.
func (t *throttle) failed(keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.seen) > maxThrottled { // a flood of names or addresses: forget what no longer blocks
		for k, f := range t.seen {
			if now.Sub(f.since) >= t.window || f.n < t.max {
				delete(t.seen, k)
			}
		}
	}
	for _, k := range keys {
		f, ok := t.seen[k]
		if !ok || now.Sub(f.since) >= t.window {
			f = &failures{since: now}
			t.seen[k] = f
		}
		f.n++
	}
}
