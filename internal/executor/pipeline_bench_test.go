package executor_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/levee-dev/levee/internal/executor"
)

// benchPipeline returns a pipeline that never makes anyone wait: no rate limit and more
// bulkhead slots than a benchmark holds.
func benchPipeline(b *testing.B) *executor.Pipeline {
	b.Helper()
	p, err := executor.NewPipeline(executor.Policy{Concurrency: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkPipeline measures the policy bookkeeping of one pull and its attempts: Admit a
// batch, Pulled, then Finish per job (breaker outcome and bulkhead slot), as a worker's pull
// loop and attempts do. ns/job is the cost each job pays.
func BenchmarkPipeline(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			p := benchPipeline(b)
			ctx := context.Background()
			ok := executor.Verdict{Class: executor.Succeeded}
			b.ReportAllocs()
			for b.Loop() {
				n, err := p.Admit(ctx, batch)
				if err != nil || n != batch {
					b.Fatalf("admitted %d of %d: %v", n, batch, err)
				}
				p.Pulled(n, n, false)
				for range n {
					p.Finish(ok, false)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/job")
		})
	}
}

// BenchmarkPipelineParallel measures Admit, Pulled and Finish of one job at a time from
// GOMAXPROCS goroutines sharing the pipeline, as a worker's attempts share their kind's.
func BenchmarkPipelineParallel(b *testing.B) {
	p := benchPipeline(b)
	ctx := context.Background()
	ok := executor.Verdict{Class: executor.Succeeded}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n, err := p.Admit(ctx, 1)
			if err != nil || n != 1 {
				b.Errorf("admitted %d: %v", n, err)
				return
			}
			p.Pulled(n, n, false)
			p.Finish(ok, false)
		}
	})
}
