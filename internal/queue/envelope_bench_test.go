package queue_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/levee-dev/levee/internal/queue"
)

// benchPayloads are the payload sizes the envelope benchmarks encode and decode: a small job
// and a 4 KiB one.
var benchPayloads = []int{64, 4 << 10}

// jsonString returns a JSON string of exactly n bytes.
func jsonString(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = 'x'
	}
	p[0], p[n-1] = '"', '"'
	return p
}

func benchEnvelope(b *testing.B, size int) (queue.Names, queue.Envelope) {
	b.Helper()
	names, err := queue.NewNames("levee")
	if err != nil {
		b.Fatal(err)
	}
	env, err := queue.NewEnvelope("charge", "01JD2Q3V8J4T6M2Q7R5W0YBZ1N", "order-1001", jsonString(size), 3, 0)
	if err != nil {
		b.Fatal(err)
	}
	return names, env
}

// BenchmarkEnvelopeMsg measures encoding a job as a NATS message: subject and headers.
func BenchmarkEnvelopeMsg(b *testing.B) {
	for _, size := range benchPayloads {
		b.Run(fmt.Sprintf("payload=%dB", size), func(b *testing.B) {
			names, env := benchEnvelope(b, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				_ = names.Msg(env)
			}
		})
	}
}

// BenchmarkEnvelopeDecode measures reading a delivered message back into a job: subject,
// header checks and payload compaction.
func BenchmarkEnvelopeDecode(b *testing.B) {
	for _, size := range benchPayloads {
		b.Run(fmt.Sprintf("payload=%dB", size), func(b *testing.B) {
			names, env := benchEnvelope(b, size)
			m := names.Msg(env)
			stored := time.Now()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := names.Decode(m.Subject, m.Header, m.Data, stored, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
