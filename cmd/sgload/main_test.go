package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/streamgate/streamgate/internal/testenv"
)

// Every goroutine a mode starts must be stopped before run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestPayloadsAreDistinctAndSized(t *testing.T) {
	ps := payloads(1000, 1024)
	seen := map[string]bool{}
	for _, p := range ps {
		require.Len(t, p, 1024)
		seen[string(p)] = true
	}
	require.Len(t, seen, 1000)
	ps = payloads(3, 5) // sizes that are not a multiple of 8
	require.Len(t, ps[2], 5)
	require.Equal(t, 5, cap(ps[0]), "appending to one payload must not overwrite the next")
}

func TestParseRejectsBadSettings(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no mode"},
		{[]string{"fly"}, "unknown mode"},
		{[]string{"publish"}, "--topic is required"},
		{[]string{"publish", "--topic", "t", "--count", "0"}, "--count 0"},
		{[]string{"publish", "--topic", "t", "--count", "2", "--streams", "3"}, "--streams 3"},
		{[]string{"publish", "--topic", "t", "--batch", "0"}, "--batch 0"},
		{[]string{"publish", "--topic", "t", "extra"}, "unexpected argument"},
	} {
		_, err := parse(tc.args, &bytes.Buffer{})
		require.ErrorContains(t, err, tc.want, tc.args)
	}
	c, err := parse([]string{"subscribe", "--topic", "t"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "sgload-t", c.subscription)
	require.Equal(t, 1024, c.size)
}

// TestModesMoveEveryMessage runs the four modes in the script's order
// against a kfake broker and a gateway: each prints its line, and the
// readers read exactly what the writers wrote.
func TestModesMoveEveryMessage(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"direct", "gateway"}, Partitions: 8})
	const n = "3000"
	for _, args := range [][]string{
		{"produce-direct", "--brokers", env.Brokers[0], "--topic", "direct", "--size", "100"},
		{"publish", "--addr", env.Addr, "--topic", "gateway", "--size", "100", "--streams", "3", "--batch", "50"},
		{"consume-direct", "--brokers", env.Brokers[0], "--topic", "direct"},
		{"subscribe", "--addr", env.Addr, "--topic", "gateway"},
	} {
		var out, errOut bytes.Buffer
		err := run(t.Context(), append(args, "--count", n, "--timeout", "60s"), &out, &errOut)
		require.NoError(t, err, errOut.String())
		line := out.String()
		require.True(t, strings.HasPrefix(line, "mode="+args[0]+" messages="+n+" "), line)
		require.Contains(t, line, "cpu_us_per_msg=")
	}
	total := func(m map[string]map[int32]int64, topic string) (sum int64) {
		for _, off := range m[topic] {
			sum += off
		}
		return sum
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	direct, err := kadm.NewClient(cl).FetchOffsets(t.Context(), "sgload-direct")
	require.NoError(t, err)
	sum := int64(0)
	direct.Each(func(o kadm.OffsetResponse) { sum += o.At })
	require.EqualValues(t, 3000, sum, "consume-direct committed everything")
	require.Eventually(t, func() bool { return total(env.Committed(t, "sgload-gateway"), "gateway") == 3000 },
		15*time.Second, 50*time.Millisecond, "subscribe's acks were all saved")
}
