package auth

import (
	"testing"

	"github.com/streamgate/streamgate/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }
