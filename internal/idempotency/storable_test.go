package idempotency_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

func TestStorableText(t *testing.T) { // not parallel: AllocsPerRun
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain ascii", "plain ascii"},
		{"café ☕", "café ☕"},
		{"a\x00b", "a\uFFFDb"},
		{"a\xffb", "a\uFFFDb"},
		{"caf\xc3", "caf\uFFFD"},                   // cut inside a character
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"},     // an encoded surrogate: each byte
		{"é\x00\xfe\x00z", "é\uFFFD\uFFFD\uFFFDz"}, // NUL after non-ASCII
	} {
		got := idempotency.StorableText(tc.in)
		require.Equal(t, tc.want, got, "StorableText(%q)", tc.in)
		require.True(t, utf8.ValidString(got))
		require.NotContains(t, got, "\x00")
	}
	s := "already storable é"
	require.Equal(t, 0.0, testing.AllocsPerRun(100, func() { _ = idempotency.StorableText(s) }), "the fast path does not allocate")
}

// storableJSONCases are results a handler may return, and what the ledger stores for each.
var storableJSONCases = []struct {
	name, in, want string
	asIs           bool // the fast path keeps the very bytes
}{
	{"object", `{"ok":true,"n":1}`, `{"ok":true,"n":1}`, true},
	{"white space kept", ` [1, 2] `, ` [1, 2] `, true},
	{"escaped pair", `"\ud83d\ude00"`, `"\ud83d\ude00"`, true},
	{"escapes", `"caf\u00e9 \n \"q\""`, `"caf\u00e9 \n \"q\""`, true},
	{"NUL escape", `{"body":"a\u0000b"}`, `{"body":"a` + "\uFFFD" + `b"}`, false},
	{"invalid UTF-8", "{\"body\":\"a\xffb\"}", `{"body":"a` + "\uFFFD" + `b"}`, false},
	{"lone high surrogate", `["\ud800x"]`, `["` + "\uFFFD" + `x"]`, false},
	{"lone low surrogate", `"\uDC00"`, `"` + "\uFFFD" + `"`, false},
	{"high surrogate at the end", `"\ud83d"`, `"` + "\uFFFD" + `"`, false},
	{"numbers as written", `{"big":123456789012345678901234567890.5,"x":"\u0000"}`,
		`{"big":123456789012345678901234567890.5,"x":"` + "\uFFFD" + `"}`, false},
	{"NUL in a name", `{"a\u0000":1}`, `{"a` + "\uFFFD" + `":1}`, false},
	{"escaped backslash", `"\\u0000"`, `"\\u0000"`, false},
	{"not JSON", "not json \x00 \xff", `"not json ` + "\uFFFD \uFFFD" + `"`, false},
	{"two values", `1 2`, `"1 2"`, false},
	{"empty", ``, `""`, false},
	{"raw NUL in a string", "\"a\x00b\"", `"\"a` + "\uFFFD" + `b\""`, false},
	{"HTML kept", "<b>&</b>", `"<b>&</b>"`, false},
	{"numbers numeric holds", `[1e131071,0.5e131072,1e-16383,-0.0,1E+2]`, `[1e131071,0.5e131072,1e-16383,-0.0,1E+2]`, true},
	{"number too large", `{"n":1e131072}`, `{"n":"1e131072"}`, false},
	{"number too precise", `[123e-16390,2]`, `["123e-16390",2]`, false},
	{"exponent beyond int", `[1e99999999999999999999]`, `["1e99999999999999999999"]`, false},
	{"deepest nesting", strings.Repeat("[", 10000) + strings.Repeat("]", 10000), strings.Repeat("[", 10000) + strings.Repeat("]", 10000), true},
	{"too deep", strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		`"` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `"`, false},
	{"unclosed", `{"a":[1,2}`, `"{\"a\":[1,2}"`, false},
	{"trailing comma", `[1,]`, `"[1,]"`, false},
	{"empty containers", `{"a":{},"b":[],"c":[{}]}`, `{"a":{},"b":[],"c":[{}]}`, true},
}

func TestStorableJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range storableJSONCases {
		got := idempotency.StorableJSON([]byte(tc.in))
		require.Equal(t, tc.want, string(got), tc.name)
		if tc.asIs {
			in := []byte(tc.in)
			require.Same(t, &in[0], &idempotency.StorableJSON(in)[0], "%s: stored as it is", tc.name)
		}
	}
}

// The fast path's scanner takes nothing that is not JSON: every input here is stored as a
// JSON string of its text.
func TestStorableJSONScansLikeJSONValid(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`01`, `-`, `1.`, `.5`, `1e`, `1e+`, `+1`, `0x10`, `"\u00"`, `"\u00zz"`, `"\x"`, `"a`, `tru`, `nul`, `falsey`,
		`{"a" 1}`, `{1:2}`, `{"a":}`, `[1 2]`, `[`, `]`, `{"a":1,}`, `{"a":1]`, `[1}`, "\"tab\there\"", `"\ud800\u0041"`,
		`[] []`, ` `, "\ufeff1",
	} {
		require.False(t, json.Valid([]byte(in)) && !strings.Contains(in, `\u`), "the case %q is not JSON", in)
		require.False(t, idempotency.JSONAsIs([]byte(in)), "%q", in)
		var s string
		require.NoError(t, json.Unmarshal(idempotency.StorableJSON([]byte(in)), &s), "%q is stored as a string", in)
	}
}

// Whatever StorableJSON returns, Postgres stores as jsonb; whatever StorableText returns, as
// text.
func TestStorableIsAcceptedByPostgres(t *testing.T) {
	t.Parallel()
	pool := leveetest.Pool(t)
	ctx := context.Background()
	for _, tc := range storableJSONCases {
		var out string
		require.NoError(t, pool.QueryRow(ctx, `SELECT $1::jsonb::text`, string(idempotency.StorableJSON([]byte(tc.in)))).Scan(&out), tc.name)
		require.NoError(t, pool.QueryRow(ctx, `SELECT $1::text`, idempotency.StorableText(tc.in)).Scan(&out), tc.name)
	}
}

// refusedEscape reports whether b holds a \u escape jsonb refuses (\u0000, a surrogate not in a
// high-low pair) or something that looks like one after an escaped backslash.
func refusedEscape(b []byte) bool {
	surrogate := func(h []byte, lo bool) bool {
		set := "89abAB"
		if lo {
			set = "cdefCDEF"
		}
		return (h[0] == 'd' || h[0] == 'D') && strings.IndexByte(set, h[1]) >= 0
	}
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(`\u`))
		if j < 0 || i+j+6 > len(b) {
			return false
		}
		i += j + 2
		h := b[i : i+4]
		switch {
		case string(h) == "0000", surrogate(h, true):
			return true
		case surrogate(h, false):
			if i+10 > len(b) || string(b[i+4:i+6]) != `\u` || !surrogate(b[i+6:i+10], true) {
				return true
			}
			i += 10
		default:
			i += 4
		}
	}
}

// plainNumbers reports whether every number of the JSON value b is short and has no exponent.
func plainNumbers(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return true
		}
		if n, ok := tok.(json.Number); ok && (len(n) > 1000 || strings.ContainsAny(string(n), "eE")) {
			return false
		}
	}
}

func FuzzStorableJSON(f *testing.F) {
	for _, tc := range storableJSONCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// The fast path says what utf8.Valid, json.Valid and a search for refused escapes say.
		asIs := idempotency.JSONAsIs(in)
		valid := utf8.Valid(in) && json.Valid(in)
		if asIs && !valid {
			t.Fatalf("JSONAsIs(%q) but not valid UTF-8 JSON", in)
		}
		if asIs && refusedEscape(in) && !bytes.Contains(in, []byte(`\\`)) {
			t.Fatalf("JSONAsIs(%q) with an escape jsonb refuses", in)
		}
		if !asIs && valid && !refusedEscape(in) && plainNumbers(in) {
			t.Fatalf("JSONAsIs(%q) is false for storable JSON", in)
		}
		out := idempotency.StorableJSON(in)
		if !utf8.Valid(out) || !json.Valid(out) {
			t.Fatalf("StorableJSON(%q) = %q: not valid UTF-8 JSON", in, out)
		}
		if bytes.Contains(out, []byte(`\u0000`)) && !bytes.Contains(out, []byte(`\\`)) {
			t.Fatalf("StorableJSON(%q) = %q: a \\u0000 escape", in, out)
		}
		if again := idempotency.StorableJSON(out); !bytes.Equal(again, out) {
			t.Fatalf("StorableJSON is not stable: %q, then %q", out, again)
		}
		s := idempotency.StorableText(string(in))
		if !utf8.ValidString(s) || strings.Contains(s, "\x00") {
			t.Fatalf("StorableText(%q) = %q", in, s)
		}
	})
}

// Design rule 28: nothing stored can fail the batch. One group commit of 64 outcomes, among
// them results jsonb refuses as they are (a \u0000 escape, invalid UTF-8, a lone surrogate,
// not JSON at all) and texts Postgres refuses (NUL, invalid UTF-8 in the error, the reason, the
// worker's name), commits all 64, each stored made storable.
func TestFinishStoresEveryOutcomeOfABatch(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	const n = 64
	reqs := make([]idempotency.ClaimRequest, n)
	for i := range reqs {
		reqs[i] = req(fmt.Sprintf("j%02d", i), fmt.Sprintf("k%02d", i), "p", time.Minute)
	}
	claims, err := l.Claim(ctx, reqs)
	require.NoError(t, err)
	outs := make([]idempotency.Outcome, n)
	for i, c := range claims {
		require.Equal(t, idempotency.Claimed, c.Status)
		outs[i] = idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: reqs[i].Key, Fence: c.Fence},
			State: idempotency.StateSucceeded, Result: fmt.Appendf(nil, `{"n":%d}`, i),
			Attempt: idempotency.AttemptSucceeded, Worker: "w1"}
	}
	outs[3].Result = []byte(`{"body":"a\u0000b"}`)
	outs[5].Result = []byte("{\"body\":\"a\xff\xfeb\"}")
	outs[7] = idempotency.Outcome{Lease: outs[7].Lease, State: idempotency.StateDead, Reason: "permanent\x00error",
		Error: "boom\x00 \xff" + strings.Repeat("é", 2000), Attempt: idempotency.AttemptFailed, Worker: "w\x001"}
	outs[9].Result = []byte("<html>\x00\xff</html>")
	outs[11].Result = []byte(`["\ud800"]`)
	outs[13] = idempotency.Outcome{Lease: outs[13].Lease, State: idempotency.StateRetrying, Error: "\xc3", RetryIn: time.Hour,
		Attempt: idempotency.AttemptFailed, Worker: "w1"}

	applied, err := l.Finish(ctx, outs)
	require.NoError(t, err, "one statement for all 64 outcomes")
	for i, ok := range applied {
		require.True(t, ok, "outcome %d applied", i)
	}
	status := func(i int) *idempotency.JobStatus {
		t.Helper()
		st, err := l.Status(ctx, reqs[i].JobID)
		require.NoError(t, err)
		return st
	}
	require.JSONEq(t, `{"n":0}`, string(status(0).Result))
	require.JSONEq(t, `{"body":"a`+"\uFFFD"+`b"}`, string(status(3).Result))
	require.JSONEq(t, `{"body":"a`+"\uFFFD\uFFFD"+`b"}`, string(status(5).Result))
	st := status(7)
	require.Equal(t, idempotency.StateDead, st.State)
	require.Equal(t, "permanent\uFFFDerror", st.Reason)
	require.True(t, strings.HasPrefix(st.LastError, "boom\uFFFD \uFFFDéé"), st.LastError[:20])
	require.LessOrEqual(t, len(st.LastError), 2048, "the error is still bounded")
	require.True(t, utf8.ValidString(st.LastError))
	require.JSONEq(t, `"<html>`+"\uFFFD\uFFFD"+`</html>"`, string(status(9).Result), "not JSON: a JSON string of its text")
	require.JSONEq(t, `["`+"\uFFFD"+`"]`, string(status(11).Result))
	require.Equal(t, "\uFFFD", status(13).LastError)

	rows, err := l.Attempts(ctx, reqs[7].JobID)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, "w\uFFFD1", rows[0].Worker)
}

// Design rule 28 for every other write of the ledger: records, dead marks, last chances,
// cancellations and the audit log store their texts made storable, and a record whose id or
// key cannot be stored is stored under the id's stand-in, found again by Status.
func TestEveryLedgerWriteStoresItsTexts(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	badID := "job-\xff\x00"
	badKey := "key-\xff"

	require.NoError(t, l.AddRecords(ctx, []idempotency.Record{
		{JobID: "r1", Kind: "charge", Key: "k-r1", State: idempotency.StateDead, Reason: "malformed\x00", Error: "bad \xff\x00 header"},
		{JobID: badID, Kind: "charge", Key: badKey, State: idempotency.StateDead, Reason: "malformed", Error: "x"},
		{JobID: "r3", Kind: "charge\xff", Key: strings.Repeat("k", 3000), State: idempotency.StateSucceeded, DuplicateOf: "j\x00"},
	}))
	st, err := l.Status(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, "malformed\uFFFD", st.Reason)
	require.Equal(t, "bad \uFFFD\uFFFD header", st.LastError)
	st, err = l.Status(ctx, badID)
	require.NoError(t, err, "found under its stand-in")
	require.Equal(t, queue.BoundedID(badID), st.ID)
	require.Equal(t, "key-\uFFFD", st.Key)
	found, err := l.FindByKey(ctx, badKey)
	require.NoError(t, err)
	require.Len(t, found, 1)
	st, err = l.Status(ctx, "r3")
	require.NoError(t, err)
	require.Equal(t, "charge\uFFFD", st.Kind)
	require.Len(t, st.Key, queue.MaxKeyLen)
	require.Equal(t, "j\uFFFD", st.DuplicateOf)

	// A stranded job with texts that cannot be stored, and its last chance.
	require.NoError(t, l.MarkSolo(ctx, "solo-\xff", "charge\x00", 3))
	action, err := l.MarkDead(ctx, idempotency.Record{JobID: "solo-\xff", Kind: "charge", Key: "solo-\xff",
		Reason: "max_deliveries\x00", Error: "delivered \xff times"}, 3, false)
	require.NoError(t, err)
	require.Equal(t, idempotency.StrandedDead, action, "its mark was found under the same stand-in")
	st, err = l.Status(ctx, "solo-\xff")
	require.NoError(t, err)
	require.Equal(t, "max_deliveries\uFFFD", st.Reason)
	require.Equal(t, "delivered \uFFFD times", st.LastError)

	// Its own running key, dead with a text that cannot be stored.
	c := claimOne(t, l, req("run1", "run1", "p", 50*time.Millisecond))
	require.Equal(t, idempotency.Claimed, c.Status)
	require.NoError(t, l.MarkSolo(ctx, "run1", "charge", 4))
	time.Sleep(100 * time.Millisecond) // the lease lapses on the database clock
	action, err = l.MarkDead(ctx, idempotency.Record{JobID: "run1", Kind: "charge", Key: "run1", Reason: "max_deliveries",
		Error: "crashed \x00"}, 4, false)
	require.NoError(t, err)
	require.Equal(t, idempotency.StrandedDead, action)
	st, err = l.Status(ctx, "run1")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateDead, st.State)
	require.Equal(t, "crashed \uFFFD", st.LastError)

	// Cancellations.
	cq, err := l.CancelQueued(ctx, req("q1", "q1", "p", time.Minute), "by \xff\x00")
	require.NoError(t, err)
	require.Equal(t, "by \uFFFD\uFFFD", cq.LastError)
	_, err = l.CancelQueued(ctx, req("q2", "q2\xff", "p", time.Minute), "x")
	require.ErrorContains(t, err, "the key is not")
	c = claimOne(t, l, req("r9", "r9", "p", time.Minute))
	require.True(t, finishOne(t, l, idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: "r9", Fence: c.Fence},
		State: idempotency.StateRetrying, RetryIn: time.Hour, Error: "503"}))
	cr, err := l.CancelRetrying(ctx, "charge", "r9", "r9", "stop\x00")
	require.NoError(t, err)
	require.Equal(t, "stop\uFFFD", cr.LastError)
	_, err = l.CancelRetrying(ctx, "charge", "r9\xff", "r9", "x")
	require.ErrorIs(t, err, idempotency.ErrNotApplicable)
	require.ErrorIs(t, l.MakeDue(ctx, "charge", "r9\xff", "r9"), idempotency.ErrNotApplicable)
	before, _, err := l.Revive(ctx, "charge", "r9\xff", "r9", nil, "ops")
	require.NoError(t, err)
	require.Empty(t, before, "a key that cannot be stored has no row")

	// The audit log and the operator's reads.
	require.NoError(t, l.Audit(ctx, "ops\xff", "cancel\x00", "job \xfe", "detail\x00"))
	log, err := l.AuditLog(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, "ops\uFFFD", string(log[0].Actor))
	require.Equal(t, "detail\uFFFD", log[0].Detail)
	_, err = l.ListJobs(ctx, idempotency.JobQuery{Kind: "charge\xff", State: "dead\x00", AfterAt: time.Now(), AfterID: "\xff", Limit: 10})
	require.NoError(t, err)
	_, err = l.Attempts(ctx, "\xff")
	require.NoError(t, err)

	// A lease that names a key that cannot be stored is not applied, and fails nothing.
	good := claimOne(t, l, req("h1", "h1", "p", time.Minute))
	alive, err := l.Heartbeat(ctx, []idempotency.Lease{{Kind: "charge", Key: "h\xff", Fence: 1}, {Kind: "charge", Key: "h1", Fence: good.Fence}}, time.Minute)
	require.NoError(t, err)
	require.Equal(t, []idempotency.LeaseStatus{idempotency.LeaseLost, idempotency.LeaseExtended}, alive)
	applied, err := l.Finish(ctx, []idempotency.Outcome{
		{Lease: idempotency.Lease{Kind: "charge", Key: "h\xff", Fence: 1}, State: idempotency.StateSucceeded},
		{Lease: idempotency.Lease{Kind: "charge", Key: "h1", Fence: good.Fence}, State: idempotency.StateSucceeded},
	})
	require.NoError(t, err)
	require.Equal(t, []bool{false, true}, applied)
}

// BenchmarkStorableJSON measures the ledger's check of one result on the hot path: the fast
// path for results stored as they are (beside json.Valid alone, for reference: the check it
// replaces costs more than that), and the re-encoding of one that jsonb would refuse.
func BenchmarkStorableJSON(b *testing.B) {
	item := `{"id":"ch_3MtwBwLkdIwHu7ix28a3tqPa","amount":4200,"currency":"eur","note":"caf\u00e9 ok"},`
	body := func(n int) string { return strings.TrimSuffix(strings.Repeat(item, n), ",") }
	for _, tc := range []struct{ name, in string }{
		{"small", `{"status":200,"body":{"id":"ch_3MtwBwLkdIwHu7ix28a3tqPa","amount":4200,"paid":true}}`},
		{"4KiB", `{"status":200,"body":[` + body(45) + `]}`},
		{"64KiB", `{"status":200,"body":[` + body(720) + `]}`},
		{"64KiB-text", `{"status":200,"body":"` + strings.Repeat("lorem ipsum dolor sit amet, ", 2340) + `"}`},
		{"4KiB-NUL", `{"status":200,"body":[` + body(45) + `,"\u0000"]}`},
	} {
		in := []byte(tc.in)
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				_ = idempotency.StorableJSON(in)
			}
		})
		b.Run(tc.name+"/json.Valid", func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				_ = json.Valid(in)
			}
		})
	}
}
