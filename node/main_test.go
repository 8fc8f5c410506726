package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts must be stopped by its owner.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
