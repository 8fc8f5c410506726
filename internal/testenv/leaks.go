package testenv

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// VerifyNoLeaks runs the tests and then checks, as goleak.VerifyTestMain
// does, that every goroutine they started has ended, with more patience
// than goleak's own (about half a second): franz-go's Client.Close does
// not wait for its fetch manager, which ends once its last fetch does,
// and on a loaded machine (CI from empty caches) that came later. A
// goroutine still there after 10 s is a leak.
func VerifyNoLeaks(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := EventuallyNoLeaks(10 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// EventuallyNoLeaks is goleak.Find retried until it finds nothing or
// patience runs out.
func EventuallyNoLeaks(patience time.Duration, opts ...goleak.Option) error {
	deadline := time.Now().Add(patience)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond) // the poll interval of a wait with a deadline
	}
}
