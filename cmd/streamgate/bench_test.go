package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/internal/buildbin"
)

// TestCLI_BenchDirectPrintsTheTable runs the built binary as a user would:
// `streamgate bench --direct` starts a devbroker and a gateway as processes
// of their own, runs the four phases, prints the table with every process's
// CPU per message and the ratios, and stops its children.
func TestCLI_BenchDirectPrintsTheTable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "streamgate")
	require.NoError(t, buildbin.Build(ctx, bin))

	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "bench", "--direct", "--count", "3000", "--size", "256")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	require.NoError(t, cmd.Run(), errOut.String())
	table := out.String()
	for _, phase := range []string{"produce (direct franz-go)", "publish (streamgate)", "consume + commit (direct franz-go)", "subscribe + ack (streamgate)"} {
		// name | messages | msgs/s | MiB/s | 3 latencies | gateway | client | broker
		row := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(phase) + ` \| 3000 \| [0-9]+ \| [0-9.]+ \| - \| - \| - \| ([^|]+) \| [0-9.]+ \| [0-9.]+ \|$`)
		m := row.FindStringSubmatch(table)
		require.NotNil(t, m, "no row for %s in\n%s", phase, table)
		if strings.Contains(phase, "streamgate") {
			require.Regexp(t, `^[0-9.]+$`, m[1], "the gateway's CPU per message is read from /proc")
		}
	}
	require.Regexp(t, `- publish: throughput [0-9.]+x, gateway CPU per message [0-9.]+x a direct client's, [0-9]+ msgs/s per gateway core, our client's CPU per message [0-9.]+x`, table)
	require.Contains(t, table, "- subscribe + ack: throughput ")
	require.Contains(t, errOut.String(), "started a devbroker")

	// A bad setting is a usage error naming the flag, before anything starts.
	for _, c := range []struct{ args, want string }{
		{"--mode fly", `--mode "fly": want one of both, publish, subscribe, e2e`},
		{"--size 4", "--size 4: want 8 or more"},
		{"--count 5 --duration 1s", "--count and --duration: give one of them, not both"},
		{"--addr 127.0.0.1:1 --direct", "--direct with --addr needs --brokers"},
	} {
		errOut.Reset()
		cmd := exec.CommandContext(ctx, bin, append([]string{"bench"}, strings.Fields(c.args)...)...)
		cmd.Stderr = &errOut
		err := cmd.Run()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, c.args)
		require.Equal(t, 2, ee.ExitCode(), c.args)
		require.Contains(t, errOut.String(), c.want)
		require.NotContains(t, errOut.String(), "started a devbroker")
	}
}
