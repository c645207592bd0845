//go:build unix

package chaos

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// downstream is a payment-like provider: a call with an Idempotency-Key it has seen returns
// the stored response without a new effect (calls with one key are serialized, as a provider
// locks a key in use); a call with a new key, or with none, makes one effect (a charge) for the
// order named in its body. It records every call.
type downstream struct {
	srv *httptest.Server
	// minDelay and maxDelay bound the time a new charge takes.
	minDelay, maxDelay time.Duration

	mu      sync.Mutex
	keys    map[string]*providerKey
	effects map[string]int // order → charges made
	calls   int
	charged atomic.Int64
}

type providerKey struct {
	calls int // guarded by downstream.mu

	mu   sync.Mutex // held while a call with the key runs
	resp []byte     // nil until the first call with the key completes
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
	var req chargeRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Order == "" {
		http.Error(w, `{"error":"want {\"order\": ...}"}`, http.StatusBadRequest)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	d.mu.Lock()
	d.calls++
	pk := d.keys[key]
	if pk == nil || key == "" {
		pk = &providerKey{}
		if key != "" {
			d.keys[key] = pk
		}
	}
	pk.calls++
	d.mu.Unlock()

	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.resp == nil {
		if d.maxDelay > 0 {
			time.Sleep(d.minDelay + rand.N(d.maxDelay-d.minDelay+1))
		}
		d.mu.Lock()
		d.effects[req.Order]++
		n := d.effects[req.Order]
		d.mu.Unlock()
		d.charged.Add(1)
		pk.resp = fmt.Appendf(nil, `{"charge":"ch_%s_%d"}`, req.Order, n)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(pk.resp)
}

// url is where jobs send their charges.
func (d *downstream) url() string { return d.srv.URL + "/charge" }

// snapshot copies what the provider recorded: charges per order, calls per key.
func (d *downstream) snapshot() (effects map[string]int, callsPerKey map[string]int, calls int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	effects = make(map[string]int, len(d.effects))
	for k, v := range d.effects {
		effects[k] = v
	}
	callsPerKey = make(map[string]int, len(d.keys))
	for k, pk := range d.keys {
		callsPerKey[k] = pk.calls
	}
	return effects, callsPerKey, d.calls
}
