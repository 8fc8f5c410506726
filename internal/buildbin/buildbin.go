// Package buildbin compiles the streamgate binary for tests that run it as
// a process or in a container.
package buildbin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build compiles cmd/streamgate into out, statically (CGO_ENABLED=0: a
// scratch image has no libc) and with the same flags every caller uses, so
// that one build finds the other's packages in the cache; env adds to the
// environment (GOOS, GOARCH). ctx bounds it: on empty caches it takes
// minutes.
func Build(ctx context.Context, out string, env ...string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if root == "." || strings.TrimSpace(string(gomod)) == os.DevNull {
		return errors.New("go env GOMOD: not inside the streamgate module")
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/streamgate")
	cmd.Dir = root
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/streamgate: %w\n%s", err, b)
	}
	return nil
}
