package rabbitmqtest

import (
	"errors"
	"os"
	"sync"
	"testing"
)

// shared is the node of this test binary, started by the first Require.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Require returns this test binary's node, starting it on first use. Without
// rabbitmq-server installed the test is skipped with the install command,
// or fails when CI=true (CI must not skip silently).
func Require(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = Start() })
	switch {
	case errors.Is(shared.err, ErrNotInstalled) && os.Getenv("CI") != "true":
		t.Skipf("%v", shared.err)
	case shared.err != nil:
		t.Fatalf("rabbitmqtest: %v", shared.err)
	}
	return shared.srv
}

// Main runs the tests and then stops the node Require started, if any:
// call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Stop()
	}
	os.Exit(code)
}
