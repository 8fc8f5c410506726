// Package python_test runs the Python examples against a real node, to
// prove that the gRPC API is usable without streamgate's Go code.
package python_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/internal/leaktest"
	"github.com/streamgate/streamgate/internal/testenv"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Every goroutine a test starts must be stopped by its owner.
func TestMain(m *testing.M) {
	leaktest.VerifyTestMain(m)
}

const install = "apt-get install python3-grpcio python3-protobuf"

// python returns an interpreter that can import grpc, protobuf and the
// committed stubs: $STREAMGATE_PYTHON, else python3 on PATH, else Debian's
// /usr/bin/python3 (a pyenv or virtualenv python3 that comes first on PATH
// does not see Debian's packages). Without one the test skips, or fails
// when CI=true.
func python(t *testing.T) string {
	t.Helper()
	candidates := []string{"python3", "/usr/bin/python3"}
	if p := os.Getenv("STREAMGATE_PYTHON"); p != "" {
		candidates = []string{p}
	}
	var tried []string
	for _, c := range candidates {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := pythonCmd(ctx, c, "-c", "import grpc, google.protobuf; from streamgate.v1 import streamgate_pb2_grpc").CombinedOutput()
		cancel()
		if err == nil {
			return c
		}
		tried = append(tried, strings.TrimSpace(fmt.Sprintf("%s: %v %s", c, err, out)))
	}
	msg := fmt.Sprintf("no python3 with the grpc and protobuf modules (%s); install them with %q",
		strings.Join(tried, "; "), install)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// pythonCmd runs the interpreter py in this folder, where the examples and
// their stubs are. It writes no __pycache__ into the source tree.
func pythonCmd(ctx context.Context, py string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	cmd.WaitDelay = 5 * time.Second // after a kill, do not wait for stray pipe holders
	return cmd
}

// run runs a script to its end and returns its standard output; it fails
// the test, showing both outputs, if the script fails.
func run(t *testing.T, ctx context.Context, py string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := pythonCmd(ctx, py, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v (context: %v)\nstdout:\n%s\nstderr:\n%s", py, strings.Join(args, " "), err, ctx.Err(), stdout.String(), stderr.String())
	}
	t.Logf("%s %s\nstderr:\n%s", py, strings.Join(args, " "), stderr.String())
	return stdout.String()
}

func lines(s string) [][]string {
	var out [][]string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		out = append(out, strings.Split(l, "\t"))
	}
	return out
}

// TestPublishSubscribe publishes 50 messages with publisher.py, reads and
// acks them with subscriber.py, and checks that the acks were applied and
// saved: the subscription's saved positions reach the end of every shard,
// and a new subscriber of the subscription gets only what comes after.
func TestPublishSubscribe(t *testing.T) {
	py := python(t)
	const topic, subscription, n = "orders", "python", 50
	env := testenv.Start(t, testenv.Options{Topics: []string{topic}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	out := run(t, ctx, py, "publisher.py", "--addr", env.Addr, "--topic", topic, "--count", fmt.Sprint(n))
	results := lines(out)
	require.Len(t, results, n, "one result line per message:\n%s", out)
	// Results come back in order per shard; unkeyed messages spread over
	// the shards, so across them in any order: one "ok" per request id.
	seen := map[string]bool{}
	for _, r := range results {
		require.Len(t, r, 3, "result %q", r)
		require.Equal(t, "ok", r[1], "result %q", r)
		require.NotEmpty(t, r[2], "message id of %q", r)
		seen[r[0]] = true
	}
	for i := 1; i <= n; i++ {
		require.True(t, seen[fmt.Sprint(i)], "a result for request %d", i)
	}

	out = run(t, ctx, py, "subscriber.py", "--addr", env.Addr, "--subscription", subscription, "--topic", topic,
		"--from-beginning", "--max", fmt.Sprint(n))
	got := map[string]int{}
	for _, m := range lines(out) {
		require.Len(t, m, 4, "message line %q", m) // shard, attempt, key, payload
		require.True(t, strings.HasPrefix(m[0], topic+"/"), "shard of %q", m)
		require.Equal(t, "key=", m[2], "key of %q", m)
		got[m[3]]++
	}
	for i := 1; i <= n; i++ {
		require.Equal(t, 1, got[fmt.Sprintf("message-%d", i)], "message-%d printed once; printed:\n%s", i, out)
	}
	require.Len(t, got, n, "printed:\n%s", out)

	// The subscriber half-closed and read its stream to the end, so every
	// ack reached the node; the last subscriber's leave saves them. The
	// topic holds only our messages, each shard from offset 0, so the saved
	// positions reach the end of every shard when they add up to n.
	var saved map[int32]int64
	added := func() (sum int64) {
		saved = env.Committed(t, subscription)[topic]
		for _, off := range saved {
			sum += off
		}
		return sum
	}
	// Polled here rather than in require.Eventually, whose condition runs on
	// another goroutine, where Committed must not fail the test.
	deadline := time.Now().Add(30 * time.Second)
	for added() != n {
		require.True(t, time.Now().Before(deadline), "saved positions %v do not add up to %d", saved, n)
		time.Sleep(50 * time.Millisecond)
	}

	// A new subscriber of the subscription starts after them: it gets the
	// message published now, and none of the 50.
	sub := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: subscription, Topics: []string{topic}})
	out = run(t, ctx, py, "publisher.py", "--addr", env.Addr, "--topic", topic, "--key", "user-1", "after")
	require.Regexp(t, "^1\tok\t\\S+\n$", out, "publish of the marker")
	msgs := sub.WaitCount(1, 30*time.Second)
	for _, m := range msgs {
		require.Equal(t, "after", string(m.GetPayload()), "the new subscriber got an acked message (attempt %d)", m.GetDeliveryAttempt())
	}
}
