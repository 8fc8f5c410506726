package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/internal/testenv"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// statusRow runs `streamgate status --subscription` against addr and
// returns the whole output and the fields of each shard's row, by shard.
func statusRow(addr, subscription string) (string, map[string][]string, error) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"status", "--addr", addr, "--subscription", subscription}, nil, &out, &bytes.Buffer{})
	rows := map[string][]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "orders/") {
			rows[f[0]] = f
		}
	}
	return out.String(), rows, err
}

// Issue 8: `status --subscription` separates the acks not saved yet from
// the saved backlog while subscribed, and once nobody is subscribed shows
// each shard's backlog from the saved positions, saying so.
func TestCLI_StatusSubscriptionShowsSavedBacklogAckedUnsavedAndSavedPositionsWithNobodySubscribed(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"orders"}, Partitions: 2,
		Kafka: func(c *kafka.Config) { c.CommitInterval, c.CommitEvery = time.Hour, 1_000_000 }})
	var recs []*kgo.Record
	for i := range 20 {
		recs = append(recs, &kgo.Record{Topic: "orders", Partition: int32(i % 2), Value: fmt.Appendf(nil, "%d", i/2)})
	}
	env.Produce(t, recs...)
	sub := testenv.Subscribe(t, env.Client, &pb.Open{Subscription: "billing", Topics: []string{"orders"},
		StartPosition: pb.StartPosition_START_POSITION_EARLIEST})
	var ids []string
	for _, m := range sub.WaitCount(20, 10*time.Second) {
		if v := string(m.GetPayload()); v == "0" || v == "1" || v == "2" || v == "3" {
			ids = append(ids, m.GetId()) // the first 4 of each shard
		}
	}
	sub.Ack(ids...)

	// SHARD SUBSCRIBER NODE READ BY IN FLIGHT SAVED BACKLOG ACKED UNSAVED
	id := sub.Opened.GetSubscriberId()
	var text string
	var rows map[string][]string
	var err error
	want := map[string][]string{
		"orders/0": {"orders/0", id, "test-node", "test-node", "6", "10", "4"},
		"orders/1": {"orders/1", id, "test-node", "test-node", "6", "10", "4"},
	}
	if !assert.Eventually(t, func() bool {
		text, rows, err = statusRow(env.Addr, "billing")
		return err == nil && slices.Equal(rows["orders/0"], want["orders/0"]) && slices.Equal(rows["orders/1"], want["orders/1"])
	}, 10*time.Second, 50*time.Millisecond) {
		t.Fatalf("in flight 6, saved backlog 10 and acked unsaved 4 per shard do not show: %v\n%s", err, text)
	}
	t.Logf("subscribed:\n%s", text)
	assert.Contains(t, text, "SAVED BACKLOG")
	assert.Contains(t, text, "ACKED UNSAVED")
	assert.NotContains(t, text, "no subscribers")
	assert.Contains(t, text, "total: saved backlog 20, acked unsaved 8")

	require.NoError(t, sub.CloseSend()) // the last subscriber leaves; its node saves
	sub.WaitEnd(10 * time.Second)
	if !assert.Eventually(t, func() bool {
		text, rows, err = statusRow(env.Addr, "billing")
		return err == nil && strings.Contains(text, "no subscribers") && len(rows["orders/0"]) == 7 && rows["orders/0"][5] == "6" &&
			len(rows["orders/1"]) == 7 && rows["orders/1"][5] == "6"
	}, 10*time.Second, 50*time.Millisecond) {
		t.Fatalf("the saved positions do not show: %v\n%s", err, text)
	}
	t.Logf("nobody subscribed:\n%s", text)
	assert.Contains(t, text, "subscription billing (topics orders):\nno subscribers; positions saved by the backend\n")
	assert.Equal(t, []string{"orders/0", "-", "-", "-", "0", "6", "0"}, rows["orders/0"])
	assert.Equal(t, []string{"orders/1", "-", "-", "-", "0", "6", "0"}, rows["orders/1"])
	assert.Contains(t, text, "total: saved backlog 12, acked unsaved 0")
}

// Issue 8: a subscription nobody subscribes to and nothing was saved of is
// an error that says so.
func TestCLI_StatusUnknownSubscriptionSaysItHasNoSubscribersAndNoSavedPositions(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"orders"}, Partitions: 2})
	_, _, err := statusRow(env.Addr, "nobody")
	require.EqualError(t, err, `status: subscription "nobody" has no subscribers and no saved positions`)
}
