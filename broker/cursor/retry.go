package cursor

import (
	"context"
	"errors"
	"time"
)

// ErrBusy says a try could not run because another one of the same work is
// in flight (a save of the same shards): Retry tries again shortly, without
// counting it as a failure.
var ErrBusy = errors.New("busy: the same work is in flight")

// Backoff is the wait after the attempt-th failure in a row: 100ms
// doubling to 5s. Every retry loop of a backend (saves, releases,
// re-subscribing a shard) uses it.
func Backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}

// busyWait is how soon a try that found its work in flight runs again.
const busyWait = 5 * time.Millisecond

// Retry calls try until it says it is done or ctx ends. A try that fails
// waits Backoff before the next; one that made progress without finishing
// (a nil error) runs again at once; one that found its work busy (ErrBusy)
// runs again shortly. When ctx ends first, Retry returns the last error
// joined with ctx's.
func Retry(ctx context.Context, try func() (done bool, err error)) error {
	for failures := 0; ; {
		done, err := try()
		if done {
			return nil
		}
		var wait time.Duration
		switch {
		case err == nil:
			if ctx.Err() == nil {
				continue
			}
		case errors.Is(err, ErrBusy):
			wait = busyWait
		default:
			failures++
			wait = Backoff(failures)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}
