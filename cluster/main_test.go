package cluster

import (
	"testing"

	"github.com/streamgate/streamgate/internal/leaktest"
)

// TestMain fails the package if any test leaves a goroutine behind
// (leaktest says why it waits).
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }
