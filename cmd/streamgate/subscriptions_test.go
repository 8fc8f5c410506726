package main

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/internal/testenv"
)

func TestCLI_SubscriptionsHelpListsItsCommandsAndEachOneItsFlags(t *testing.T) {
	out, _, err := runCLI(context.Background(), "help")
	require.NoError(t, err)
	assert.Contains(t, out, "\n  subscriptions ", "the list names subscriptions")

	_, help, err := runCLI(context.Background(), "subscriptions", "-h")
	require.ErrorIs(t, err, flag.ErrHelp)
	for _, c := range []string{"create", "get", "update", "list", "delete", "seek"} {
		assert.Contains(t, help, "\n  "+c+" ", "it lists %s", c)
	}
	_, viaHelp, err := runCLI(context.Background(), "help", "subscriptions")
	require.ErrorIs(t, err, flag.ErrHelp)
	assert.Equal(t, help, viaHelp)

	_, createHelp, err := runCLI(context.Background(), "subscriptions", "create", "-h")
	require.ErrorIs(t, err, flag.ErrHelp)
	assert.True(t, strings.HasPrefix(createHelp, "usage: streamgate subscriptions create [flags]\n"), createHelp)
	for _, f := range []string{"--name string", "--topics list", "--start string", "--ack-deadline duration", "--max-unacked int",
		"--max-delivery-attempts int", "--dead-letter-topic string", "--min-backoff duration", "--max-backoff duration", "--addr string"} {
		assert.Contains(t, createHelp, f)
	}
	assert.NotContains(t, createHelp, "--version", "create takes no version")
	_, updateHelp, err := runCLI(context.Background(), "subscriptions", "update", "-h")
	require.ErrorIs(t, err, flag.ErrHelp)
	assert.Contains(t, updateHelp, "--version int")
	assert.NotContains(t, updateHelp, "--topics", "topics are fixed after creation")
	_, seekHelp, err := runCLI(context.Background(), "subscriptions", "seek", "-h")
	require.ErrorIs(t, err, flag.ErrHelp)
	assert.Contains(t, seekHelp, "--to string")
	assert.Contains(t, seekHelp, "--time string")
}

// Usage mistakes are reported once, with a usage line, before anything is
// dialled (the context is cancelled: nothing may start).
func TestCLI_SubscriptionsUsageMistakesExit2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"subscriptions"}, "streamgate subscriptions: a command is required"},
		{[]string{"subscriptions", "rename"}, `streamgate subscriptions: unknown command "rename": want create, get, update, list, delete or seek`},
		{[]string{"subscriptions", "get", "--bogus"}, "streamgate subscriptions get: flag provided but not defined: -bogus"},
		{[]string{"subscriptions", "get"}, "streamgate subscriptions get: --name is required"},
		{[]string{"subscriptions", "create", "--name", "s"}, "streamgate subscriptions create: --topics is required"},
		{[]string{"subscriptions", "create", "--name", "s", "--topics", "t", "--start", "middle"}, `streamgate subscriptions create: --start "middle": want earliest or latest`},
		{[]string{"subscriptions", "create", "--name", "s", "--topics", "t", "--ack-deadline", "soon"}, `streamgate subscriptions create: --ack-deadline "soon": want a duration such as 60s`},
		{[]string{"subscriptions", "update", "--name", "s"}, "streamgate subscriptions update: no setting to change"},
		{[]string{"subscriptions", "seek", "--name", "s"}, "streamgate subscriptions seek: give one of --to earliest|latest and --time"},
		{[]string{"subscriptions", "seek", "--name", "s", "--to", "latest", "--time", "2026-01-01T00:00:00Z"}, "streamgate subscriptions seek: give one of"},
		{[]string{"subscriptions", "seek", "--name", "s", "--to", "middle"}, `streamgate subscriptions seek: --to "middle": want earliest or latest`},
		{[]string{"subscriptions", "seek", "--name", "s", "--time", "yesterday"}, `streamgate subscriptions seek: --time "yesterday": want an RFC 3339 time`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			out, errOut, err := runCLI(ctx, tc.args...)
			require.Equal(t, exitError(2), err, errOut)
			assert.Empty(t, out)
			lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
			require.GreaterOrEqual(t, len(lines), 2, errOut)
			assert.True(t, strings.HasPrefix(lines[len(lines)-2], tc.want), "%q", errOut)
			assert.True(t, strings.HasPrefix(lines[len(lines)-1], "usage: streamgate subscriptions"), lines[len(lines)-1])
		})
	}
}

// The CLI round trip on a node with Kafka's subscription store: create,
// get, update (only the flags given), list, delete; the server's refusals
// are their message and code, with exit status 1.
func TestCLI_SubscriptionsRoundTrip(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"orders", "dlq"}, Partitions: 2})
	cli := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, _, err := runCLI(ctx, append(append([]string{"subscriptions"}, args...), "--addr", env.Addr)...)
		return out, err
	}
	out, err := cli("create", "--name", "billing", "--topics", "orders", "--start", "earliest", "--ack-deadline", "30s",
		"--max-delivery-attempts", "5", "--dead-letter-topic", "dlq", "--min-backoff", "10s", "--max-backoff", "2m")
	require.NoError(t, err)
	for _, want := range []string{"name:", "billing", "topics:", "orders", "start:", "earliest", "ack deadline:", "30s",
		"max un-acked:", "the server's --max-unacked", "after 5 delivery attempts, to dlq", "10s doubling to 2m0s", "version:"} {
		assert.Contains(t, out, want)
	}

	out, err = cli("get", "--name", "billing")
	require.NoError(t, err)
	assert.Contains(t, out, "30s")

	out, err = cli("update", "--name", "billing", "--ack-deadline", "45s", "--max-backoff", "5m")
	require.NoError(t, err)
	assert.Contains(t, out, "45s", "the ack deadline changed")
	assert.Contains(t, out, "10s doubling to 5m0s", "--min-backoff kept as stored")
	assert.Contains(t, out, "after 5 delivery attempts, to dlq", "flags not given are kept")

	out, err = cli("list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	assert.Equal(t, []string{"NAME", "TOPICS", "START", "ACK", "DEADLINE", "MAX", "UN-ACKED", "DEAD", "LETTERS", "RETRY", "BACKOFF", "VERSION"}, strings.Fields(lines[0]))
	row := strings.Fields(lines[1])
	assert.Equal(t, []string{"billing", "orders", "earliest", "45s", "default", "5->dlq"}, row[:6])

	out, err = cli("seek", "--name", "billing", "--to", "latest")
	require.NoError(t, err)
	assert.Equal(t, "moved 2 shard(s) of subscription billing: orders/0,orders/1\n", out)
	out, err = cli("seek", "--name", "billing", "--time", "2026-01-02T15:04:05Z")
	require.NoError(t, err)
	assert.Contains(t, out, "moved 2 shard(s)")

	_, err = cli("create", "--name", "billing", "--topics", "orders")
	require.EqualError(t, err, `subscriptions create: subscription "billing" already exists (AlreadyExists)`)
	_, err = cli("update", "--name", "billing", "--max-unacked", "1000000")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "max_unacked 1000000 is out of range")
	assert.Contains(t, err.Error(), "(InvalidArgument)")
	_, err = cli("delete", "--name", "billing", "--version", "1")
	assert.Contains(t, err.Error(), "(Aborted)")

	out, err = cli("delete", "--name", "billing")
	require.NoError(t, err)
	assert.Equal(t, "deleted subscription billing\n", out)
	_, err = cli("get", "--name", "billing")
	require.EqualError(t, err, `subscriptions get: subscription "billing" not found (NotFound)`)
	out, err = cli("list")
	require.NoError(t, err)
	assert.Equal(t, "no subscriptions\n", out)
}
