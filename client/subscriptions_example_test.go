package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
)

// A subscription as a resource: created with its settings, changed (only
// the fields named, and only if nobody changed it since it was read), and
// deleted.
func ExampleClient_CreateSubscription() {
	ctx := context.Background()
	c, err := client.Dial(addr)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	sub, err := c.CreateSubscription(ctx, client.SubscriptionConfig{
		Name: "example-billing", Topics: []string{"orders"}, FromBeginning: true, AckDeadline: 30 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(sub.Name, sub.Topics, sub.AckDeadline)

	sub.AckDeadline = 2 * time.Minute
	sub, err = c.UpdateSubscription(ctx, *sub, client.FieldAckDeadline) // sub.Version: ABORTED if changed meanwhile
	if err != nil {
		panic(err)
	}
	fmt.Println(sub.AckDeadline)

	if err := c.DeleteSubscription(ctx, sub.Name, sub.Version); err != nil {
		panic(err)
	}
	_, err = c.GetSubscription(ctx, "example-billing")
	fmt.Println(status.Code(err))
	// Output:
	// example-billing [orders] 30s
	// 2m0s
	// NotFound
}

// The client refuses durations the API cannot carry, and a seek without a
// position, before asking the server.
func TestSubscriptions_ClientRefusesSettingsOutOfRange(t *testing.T) {
	c, err := client.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	_, err = c.CreateSubscription(ctx, client.SubscriptionConfig{Name: "s", Topics: []string{"orders"}, AckDeadline: 11 * time.Minute})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "ack deadline 11m0s: want 0 to 10m0s")
	_, err = c.UpdateSubscription(ctx, client.SubscriptionConfig{Name: "s", MinBackoff: -time.Second}, client.FieldRetryPolicy)
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	_, err = c.CreateSubscription(ctx, client.SubscriptionConfig{Name: "s", Topics: []string{"orders"}, MaxUnacked: -1})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	_, err = c.Seek(ctx, "s", client.SeekPosition{})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	_, err = c.GetSubscription(ctx, "s")
	assert.Equal(t, codes.NotFound, status.Code(err), "nothing reached the server: %v", err)
}
