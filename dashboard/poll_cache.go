package dashboard

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// pollCache enforces the minimum poll interval: the refresh script's requests (header
// X-Levee-Partial) for the same page and role are answered from one rendering for MinPoll,
// and concurrent ones wait for the rendering in progress. However many tabs poll a page, and
// however often, its queries run at most once per MinPoll. Task pages are not cached: their
// progress is in memory and touches no store.
type pollCache struct {
	maxAge time.Duration
	group  singleflight.Group

	mu      sync.Mutex
	entries map[string]polled
}

type polled struct {
	at     time.Time
	status int
	body   []byte
}

func newPollCache(maxAge time.Duration) *pollCache {
	return &pollCache{maxAge: maxAge, entries: map[string]polled{}}
}

// wrap serves next through the cache for partial GET requests.
func (c *pollCache) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.Header.Get("X-Levee-Partial") == "" || strings.HasPrefix(r.URL.Path, "/tasks/") {
			next.ServeHTTP(w, r)
			return
		}
		key := string(identityFrom(r.Context()).role) + " " + r.URL.RequestURI()
		now := time.Now()
		c.mu.Lock()
		e, ok := c.entries[key]
		c.mu.Unlock()
		if !ok || now.Sub(e.at) >= c.maxAge {
			v, _, _ := c.group.Do(key, func() (any, error) {
				rec := &recorder{header: http.Header{}, status: http.StatusOK}
				next.ServeHTTP(rec, r)
				e := polled{at: time.Now(), status: rec.status, body: rec.body.Bytes()}
				if e.status < http.StatusInternalServerError { // a failure is not kept: the next poll tries again
					c.store(key, e)
				}
				return e, nil
			})
			e = v.(polled)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(e.status)
		_, _ = w.Write(e.body)
	})
}

func (c *pollCache) store(key string, e polled) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, old := range c.entries { // drop what has expired, so pages do not pile up
		if e.at.Sub(old.at) >= c.maxAge {
			delete(c.entries, k)
		}
	}
	c.entries[key] = e
}

// recorder keeps a response in memory.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(status int)      { r.status = status }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
