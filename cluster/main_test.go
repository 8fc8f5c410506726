package cluster

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := eventuallyNoLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// eventuallyNoLeaks is goleak.Find with a longer patience than goleak's
// own (about half a second): memberlist's Shutdown does not wait for its
// goroutines, and a probe in flight ends only when its ack timer fires, up
// to ProbeInterval times the Lifeguard factor (8) after Shutdown on a
// loaded machine.
func eventuallyNoLeaks(opts ...goleak.Option) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
