package idempotency_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// Design rule 28: one request the ledger cannot store never fails the claim of its batch. In
// a batch of 10, a key that is not valid UTF-8 is answered Invalid without being sent, and
// the 9 others are claimed; the invalid job can then be recorded as malformed.
func TestClaimAnswersAnInvalidRequestAlone(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	reqs := make([]idempotency.ClaimRequest, 10)
	for i := range reqs {
		reqs[i] = req(fmt.Sprintf("j%d", i), fmt.Sprintf("k%d", i), "p", time.Minute)
	}
	reqs[4].Key = "order-\xff42"
	res, err := l.Claim(ctx, reqs)
	require.NoError(t, err)
	for i, r := range res {
		if i == 4 {
			require.Equal(t, idempotency.Invalid, r.Status)
			require.Contains(t, r.Reason, "the key is not")
			continue
		}
		require.Equal(t, idempotency.Claimed, r.Status, "request %d", i)
	}
	require.NoError(t, l.AddRecords(ctx, []idempotency.Record{{JobID: reqs[4].JobID, Kind: "charge", Key: reqs[4].Key,
		State: idempotency.StateDead, Reason: "malformed", Error: res[4].Reason}}))
	st, err := l.Status(ctx, reqs[4].JobID)
	require.NoError(t, err)
	require.Equal(t, "malformed", st.Reason)
	require.Equal(t, "order-\uFFFD42", st.Key)
}

func TestClaimRefusesEveryRequestItCannotStore(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ok := req("j-ok", "k-ok", "p", time.Minute)
	for _, tc := range []struct {
		name string
		edit func(*idempotency.ClaimRequest)
		why  string
	}{
		{"NUL in the key", func(r *idempotency.ClaimRequest) { r.Key = "a\x00b" }, "the key"},
		{"empty key", func(r *idempotency.ClaimRequest) { r.Key = "" }, "the key"},
		{"key too long", func(r *idempotency.ClaimRequest) { r.Key = strings.Repeat("k", queue.MaxKeyLen+1) }, "the key"},
		{"kind not UTF-8", func(r *idempotency.ClaimRequest) { r.Kind = "charge\xc3" }, "the kind"},
		{"job id with NUL", func(r *idempotency.ClaimRequest) { r.JobID = "j\x00" }, "the job id"},
		{"job id too long", func(r *idempotency.ClaimRequest) { r.JobID = strings.Repeat("j", queue.MaxIDLen+1) }, "the job id"},
		{"fallback of not UTF-8", func(r *idempotency.ClaimRequest) { r.FallbackOf = "\xff" }, "falls back"},
		{"no payload hash", func(r *idempotency.ClaimRequest) { r.PayloadHash = nil }, "payload hash"},
	} {
		bad := req("j-bad", "k-bad", "p", time.Minute)
		tc.edit(&bad)
		res, err := l.Claim(context.Background(), []idempotency.ClaimRequest{bad, ok})
		require.NoError(t, err, tc.name)
		require.Equal(t, idempotency.Invalid, res[0].Status, tc.name)
		require.Contains(t, res[0].Reason, tc.why, tc.name)
		require.NotEqual(t, idempotency.Invalid, res[1].Status, tc.name)
	}
	res, err := l.Claim(context.Background(), []idempotency.ClaimRequest{{JobID: "x", Kind: "charge", Key: "\xff", PayloadHash: []byte{1}}})
	require.NoError(t, err)
	require.Equal(t, idempotency.Invalid, res[0].Status, "a batch of invalid requests alone sends nothing")
	require.Equal(t, "invalid", idempotency.Invalid.String())
}
