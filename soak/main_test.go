// Package soak runs streamgate nodes as processes of the built binary
// against an in-process broker, and hurts them for real: SIGKILL, SIGTERM
// drains, SIGSTOP freezes, broker faults, subscriber churn and stalls. See
// TestSoak for what it checks, and STREAMGATE_SOAK_* for how to run it
// longer.
package soak

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/streamgate/streamgate/internal/buildbin"
)

// binary is the streamgate binary the tests run, built by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "streamgate-soak-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "streamgate")
	start := time.Now()
	if err := build(binary); err != nil {
		fmt.Fprintln(os.Stderr, "soak: building streamgate:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "soak: built %s in %s\n", binary, time.Since(start).Round(time.Millisecond))
	return m.Run()
}

// build compiles cmd/streamgate the way the e2e tests do, so that one of
// the two builds finds the other in the cache. A build on empty caches
// takes minutes on two cores: the bound is generous, and the tests' own
// deadlines start after it.
func build(out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	return buildbin.Build(ctx, out)
}
