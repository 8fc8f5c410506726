package node_test

import (
	"testing"

	"github.com/streamgate/streamgate/internal/leaktest"
)

// Every goroutine a test starts must be stopped by its owner.
func TestMain(m *testing.M) {
	leaktest.VerifyTestMain(m)
}
