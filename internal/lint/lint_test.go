package lint

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// staticcheckVersion is the pinned staticcheck release; .ci/run installs
// the same.
const staticcheckVersion = "v0.8.2"

// maxLintTime bounds each tool's run: staticcheck on a cold cache takes
// minutes on a small machine that runs the other packages' tests as well.
const maxLintTime = 20 * time.Minute

// TestLint runs go vet and staticcheck on every package of the module and
// fails with their output.
func TestLint(t *testing.T) {
	root := moduleRoot(t)
	t.Run("vet", func(t *testing.T) {
		run(t, root, "go", "vet", "./...")
	})
	t.Run("staticcheck", func(t *testing.T) {
		bin := staticcheck(t)
		if out, err := exec.Command(bin, "-version").CombinedOutput(); err == nil {
			t.Logf("%s (pinned: %s)", bytes.TrimSpace(out), staticcheckVersion)
		}
		run(t, root, bin, "./...")
	})
}

// moduleRoot is the directory of the module's go.mod. go test puts
// GOROOT/bin first on PATH, so "go" is the toolchain running the test.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD: not in a module (%q)", gomod)
	}
	return filepath.Dir(gomod)
}

// staticcheck finds the staticcheck binary: $STREAMGATE_STATICCHECK, else
// staticcheck on PATH. Without one the test fails under CI=true and skips
// otherwise.
func staticcheck(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("STREAMGATE_STATICCHECK"); bin != "" {
		return bin
	}
	bin, err := exec.LookPath("staticcheck")
	if err == nil {
		return bin
	}
	msg := "staticcheck is not on PATH and STREAMGATE_STATICCHECK is not set; install it with: go install honnef.co/go/tools/cmd/staticcheck@" + staticcheckVersion
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// run runs a lint tool in the module's root and fails with its output
// when it reports anything or cannot run.
func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	timeout := maxLintTime
	if d, ok := t.Deadline(); ok {
		// Leave the test binary time to report the failure itself.
		timeout = min(timeout, time.Until(d)-30*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 10 * time.Second // a child holding the output open
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("%s %s: %s", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %s:\n%s", name, strings.Join(args, " "), timeout, out)
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		t.Fatalf("%s %s found problems (%v):\n%s", name, strings.Join(args, " "), err, out)
	case err != nil:
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
