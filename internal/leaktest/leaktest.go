// Package leaktest checks that tests leave no goroutine behind, with more
// patience than goleak's own (about half a second): libraries the tests
// run do not all wait in their Close for every goroutine they started.
// memberlist's Shutdown leaves a probe in flight until its ack timer fires
// (up to ProbeInterval times the Lifeguard factor), and franz-go's Close
// leaves its fetch manager until its last fetch ends; on a loaded machine
// (CI from empty caches) both outlived half a second. A goroutine still
// there after Patience is a leak.
package leaktest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Patience is how long VerifyTestMain waits for goroutines to end.
const Patience = 10 * time.Second

// VerifyTestMain runs the tests and then, if they passed, fails the
// package when goroutines they started are still there after Patience.
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := Eventually(Patience); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Eventually is goleak.Find retried until it finds nothing or patience
// runs out.
func Eventually(patience time.Duration, opts ...goleak.Option) error {
	deadline := time.Now().Add(patience)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond) // the poll interval of a wait with a deadline
	}
}
