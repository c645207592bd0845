package executor

import (
	"context"
	"fmt"
	"sync"
)

// Bulkhead is a counting semaphore: it bounds the attempts of one kind that a worker runs at
// once (slots taken just before the handler is called), and the messages of the kind the
// worker holds (taken before they are pulled). It is safe for concurrent use.
type Bulkhead struct {
	mu    sync.Mutex
	free  int
	size  int
	avail chan struct{} // signalled (non-blocking) when slots are released
}

// NewBulkhead returns a bulkhead of size slots.
func NewBulkhead(size int) (*Bulkhead, error) {
	if size < 1 {
		return nil, fmt.Errorf("bulkhead size must be at least 1, got %d", size)
	}
	return &Bulkhead{free: size, size: size, avail: make(chan struct{}, 1)}, nil
}

// InUse returns the number of slots held.
func (b *Bulkhead) InUse() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.size - b.free
}

// TryAcquire takes up to limit free slots without waiting and returns how many it took.
func (b *Bulkhead) TryAcquire(limit int) int {
	n, _ := b.take(limit)
	return n
}

// take takes up to limit free slots and reports whether some remain free.
func (b *Bulkhead) take(limit int) (n int, more bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n = max(0, min(limit, b.free))
	b.free -= n
	return n, b.free > 0
}

// Resize makes the bulkhead size slots. Slots held beyond a smaller size stay held until
// released; none is handed out meanwhile.
func (b *Bulkhead) Resize(size int) {
	b.mu.Lock()
	b.free += size - b.size
	b.size = size
	free := b.free
	b.mu.Unlock()
	if free > 0 {
		b.signal()
	}
}

// Acquire takes at least one and up to max slots, waiting until one is free or ctx ends.
func (b *Bulkhead) Acquire(ctx context.Context, max int) (int, error) {
	for {
		if n, more := b.take(max); n > 0 {
			if more {
				b.signal() // slots remain: pass the wake-up on to the next waiter
			}
			return n, nil
		}
		select {
		case <-b.avail:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Release gives n slots back.
func (b *Bulkhead) Release(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	if b.free > b.size {
		b.mu.Unlock()
		panic("executor: bulkhead released more slots than it holds")
	}
	b.mu.Unlock()
	b.signal()
}

// signal wakes one waiter, if any; a signal already pending is enough.
func (b *Bulkhead) signal() {
	select {
	case b.avail <- struct{}{}:
	default:
	}
}
