package client

// The waits between attempts to open a stream, shared by Receive and the
// Publisher.

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is an exponential wait with jitter.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) reset() { b.n = 0 }

// wait sleeps for the next step, in [d/2, d]; false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.min << min(b.n, 20)
	if d > b.max || d <= 0 {
		d = b.max
	}
	b.n++
	d = d/2 + jitter(d/2)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// jitter is a random duration in [0, d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}
