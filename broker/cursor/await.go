package cursor

import (
	"context"
	"sync"
)

// AwaitSaves is the waiting half of a backend's SaveAcks: it calls settle
// with mu held until settle says nothing is pending, asking for a save
// (kick) and waiting for *sig between calls. *sig is the channel the
// consumer closes (and sets to nil) after every save; AwaitSaves makes it
// when nobody waits yet. It returns ctx's error when ctx ends first.
func AwaitSaves(ctx context.Context, mu *sync.Mutex, sig *chan struct{}, settle func() (pending bool), kick func()) error {
	for {
		mu.Lock()
		pending := settle()
		var wake chan struct{}
		if pending {
			if *sig == nil {
				*sig = make(chan struct{})
			}
			wake = *sig
		}
		mu.Unlock()
		if !pending {
			return nil
		}
		kick()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
