package bench

import (
	"math/bits"
	"sync"
	"time"
)

// Histogram counts latencies in log-linear buckets: exact microseconds below
// 64 us, then 32 buckets per power of two (at most 3% wide), so a run of any
// length takes the same few KiB. It is safe for concurrent use.
type Histogram struct {
	from   time.Time // Sent ignores messages sent before
	mu     sync.Mutex
	counts [64 * subBuckets]uint64
	n      uint64
}

const (
	subBits    = 5
	subBuckets = 1 << subBits
)

// bucket maps microseconds to a bucket index; lower is its inverse, the
// smallest value in a bucket.
func bucket(us uint64) int {
	if us < 2*subBuckets {
		return int(us)
	}
	exp := bits.Len64(us) - 1 - subBits // >= 1
	return (exp+1)*subBuckets + int(us>>exp) - subBuckets
}

func lower(b int) uint64 {
	if b < 2*subBuckets {
		return uint64(b)
	}
	exp := b/subBuckets - 1
	return uint64(b%subBuckets+subBuckets) << exp
}

// Sent records the latency of a message sent at t and delivered now,
// unless it was sent before the histogram's start (while readers warmed up).
func (h *Histogram) Sent(t time.Time) {
	if t.Before(h.from) {
		return
	}
	h.Record(time.Since(t))
}

// Record adds one latency; negative ones (clock steps) count as 0.
func (h *Histogram) Record(d time.Duration) {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	b := min(bucket(us), len(h.counts)-1)
	h.mu.Lock()
	h.counts[b]++
	h.n++
	h.mu.Unlock()
}

// Count is how many latencies were recorded.
func (h *Histogram) Count() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Quantile returns the latency at or below which the fraction q of the
// recorded ones fall (the bucket's lower bound), or 0 with none recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(lower(b)) * time.Microsecond
		}
	}
	return time.Duration(lower(len(h.counts)-1)) * time.Microsecond
}
