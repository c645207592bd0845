//go:build unix

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// downstream is a payment-like provider: a call with an Idempotency-Key it has seen answered
// with a success returns the stored response without a new effect (calls with one key are
// serialized, as a provider locks a key in use); a call with a new key, or with none, makes one
// effect (a charge) for the order named in its body. It records every call, with the headers
// that say which job, attempt, claim (fence) and worker made it, when it came and ended,
// whether the client went away before the answer, and the status answered: the checker
// explains every repeated call from these (design rule 0).
type downstream struct {
	srv *httptest.Server
	// minDelay and maxDelay bound the time a new charge takes.
	minDelay, maxDelay time.Duration
	// answer, if set before the first call, chooses a special answer for some orders (a poison
	// result, a slow charge); it returns ok false for the usual one.
	answer func(order string) (a answer, ok bool)

	mu sync.Mutex
	// down is the outage set by outage: every call arriving in it is refused (zero: none).
	down    outageWindow
	keys    map[string]*providerKey
	effects map[string]int // order → charges made
	log     []*call
	charged atomic.Int64
}

// answer is a special answer for an order.
type answer struct {
	// status answered; 0 is 200. A status outside 2xx makes no charge and is not stored, so
	// the next call with the key is served afresh.
	status int
	// body answered instead of the charge's JSON (nil: the charge's JSON).
	body []byte
	// delay, if positive, replaces the random delay of a new charge.
	delay time.Duration
}

// outageWindow is a stretch of time during which the provider is down: every call that arrives
// within [from, until) is answered status, whatever its key, without an effect.
type outageWindow struct {
	from, until time.Time
	status      int
}

// outage makes the provider answer status to every call that arrives within [from, from+dur),
// after its usual delay, without an effect and without touching the key's state (as a provider
// whose service is down behind a healthy load balancer): the next call with the key is served
// afresh. It returns the window's end. Calls that arrived before from are served as usual.
func (d *downstream) outage(from time.Time, dur time.Duration, status int) (until time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = outageWindow{from: from, until: from.Add(dur), status: status}
	return d.down.until
}

type providerKey struct {
	mu   sync.Mutex // held while a call with the key runs
	resp []byte     // nil until a call with the key succeeded
}

// call is one request the downstream received.
type call struct {
	// Key is the Idempotency-Key; JobID, Attempt, Fence and Worker come from the headers
	// Levee-Job-Id, Levee-Attempt, Levee-Fence and Levee-Test-Worker (the last only from a
	// worker built with -tags chaos).
	Key, JobID, Worker string
	Order              string
	Attempt            int
	Fence              int64
	// Start is when the request arrived; End when its answer was written (zero if never).
	Start, End time.Time
	// Gone is when the client went away before the answer (its request context ended: the
	// worker cancelled the call, or died); zero if it waited for the answer.
	Gone time.Time
	// Status is the status answered (or being answered when the client went away).
	Status int
}

type chargeRequest struct {
	Order string `json:"order"`
}

func newDownstream(t *testing.T, minDelay, maxDelay time.Duration) *downstream {
	d := &downstream{minDelay: minDelay, maxDelay: maxDelay, keys: map[string]*providerKey{}, effects: map[string]int{}}
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *downstream) serve(w http.ResponseWriter, r *http.Request) {
	c := &call{
		Start: time.Now(), Key: r.Header.Get("Idempotency-Key"), JobID: r.Header.Get("Levee-Job-Id"),
		Worker: r.Header.Get("Levee-Test-Worker"),
	}
	c.Attempt, _ = strconv.Atoi(r.Header.Get("Levee-Attempt"))
	c.Fence, _ = strconv.ParseInt(r.Header.Get("Levee-Fence"), 10, 64)
	d.mu.Lock()
	d.log = append(d.log, c)
	d.mu.Unlock()
	// The body is read to its end, so that the server watches the connection from now on and
	// ends the request's context as soon as the client goes away.
	data, err := io.ReadAll(r.Body)
	answered := false
	stop := context.AfterFunc(r.Context(), func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if !answered {
			c.Gone = time.Now()
		}
	})
	defer stop()
	reply := func(status int, body []byte) {
		d.mu.Lock()
		answered = true
		c.Status = status
		d.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
		d.mu.Lock()
		c.End = time.Now()
		d.mu.Unlock()
	}

	var req chargeRequest
	if err != nil || json.Unmarshal(data, &req) != nil || req.Order == "" {
		reply(http.StatusBadRequest, []byte(`{"error":"want {\"order\": ...}"}`))
		return
	}
	d.mu.Lock()
	c.Order = req.Order
	if down := d.down; !c.Start.Before(down.from) && c.Start.Before(down.until) {
		d.mu.Unlock()
		if d.maxDelay > 0 {
			time.Sleep(d.minDelay + rand.N(d.maxDelay-d.minDelay+1))
		}
		reply(down.status, []byte(`{"error":"service unavailable"}`))
		return
	}
	pk := d.keys[c.Key]
	if pk == nil || c.Key == "" {
		pk = &providerKey{}
		if c.Key != "" {
			d.keys[c.Key] = pk
		}
	}
	d.mu.Unlock()

	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.resp != nil {
		reply(http.StatusOK, pk.resp)
		return
	}
	var special answer
	ok := false
	if d.answer != nil {
		special, ok = d.answer(req.Order)
	}
	switch {
	case special.delay > 0:
		time.Sleep(special.delay)
	case d.maxDelay > 0:
		time.Sleep(d.minDelay + rand.N(d.maxDelay-d.minDelay+1))
	}
	status := http.StatusOK
	if ok && special.status != 0 {
		status = special.status
	}
	if status/100 != 2 {
		reply(status, special.body)
		return
	}
	d.mu.Lock()
	d.effects[req.Order]++
	n := d.effects[req.Order]
	d.mu.Unlock()
	d.charged.Add(1)
	pk.resp = fmt.Appendf(nil, `{"charge":"ch_%s_%d"}`, req.Order, n)
	if ok && special.body != nil {
		pk.resp = special.body
	}
	reply(status, pk.resp)
}

// url is where jobs send their charges.
func (d *downstream) url() string { return d.srv.URL + "/charge" }

// snapshot copies what the provider recorded: charges per order, calls per key, and every call
// in the order they arrived.
func (d *downstream) snapshot() (effects map[string]int, callsPerKey map[string]int, calls []call) {
	d.mu.Lock()
	defer d.mu.Unlock()
	effects = make(map[string]int, len(d.effects))
	for k, v := range d.effects {
		effects[k] = v
	}
	callsPerKey = make(map[string]int, len(d.keys))
	calls = make([]call, len(d.log))
	for i, c := range d.log {
		calls[i] = *c
		callsPerKey[c.Key]++
	}
	return effects, callsPerKey, calls
}

// inFlight counts the calls that arrived, were not answered yet and whose client still waits,
// among those for which match is true.
func (d *downstream) inFlight(match func(c *call) bool) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.log {
		if c.End.IsZero() && c.Gone.IsZero() && match(c) {
			n++
		}
	}
	return n
}
