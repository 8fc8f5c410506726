package node

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// FuzzSubscriptionSettings: an update's mask and values either fail with
// INVALID_ARGUMENT, or give settings within every documented range.
func FuzzSubscriptionSettings(f *testing.F) {
	f.Add("ack_deadline_seconds", uint32(30), uint32(0), uint32(0), "", uint32(0), uint32(0), int32(0))
	f.Add("max_delivery_attempts", uint32(0), uint32(0), uint32(5), "dlq", uint32(0), uint32(0), int32(1))
	f.Add("retry_policy", uint32(0), uint32(0), uint32(0), "", uint32(20), uint32(10), int32(0))
	f.Add("topics", uint32(601), uint32(1001), uint32(4), "t", uint32(601), uint32(0), int32(7))
	f.Add("ordering", uint32(0), uint32(0), uint32(0), "", uint32(0), uint32(0), int32(3))
	f.Add("dead_letter_topic", uint32(0), uint32(0), uint32(0), "\xff", uint32(0), uint32(0), int32(0))
	server := Config{AckTimeout: time.Minute, MaxUnacked: 1000}
	f.Fuzz(func(t *testing.T, field string, ack, maxUnacked, attempts uint32, dlt string, minB, maxB uint32, ordering int32) {
		cur := broker.SubscriptionConfig{Name: "s", Topics: []string{"t"}, Version: 3}
		in := &pb.Subscription{Name: "s", AckDeadlineSeconds: ack, MaxUnacked: maxUnacked, MaxDeliveryAttempts: attempts,
			DeadLetterTopic: dlt, RetryPolicy: &pb.RetryPolicy{MinimumBackoffSeconds: minB, MaximumBackoffSeconds: maxB}, Ordering: pb.Ordering(ordering)}
		mask := []string{field, "max_delivery_attempts", "dead_letter_topic"}
		err := checkMask(mask)
		var next broker.SubscriptionConfig
		if err == nil {
			next, err = applyMask(cur, in, mask)
		}
		if err == nil {
			err = checkValues(next, server)
		}
		if err != nil {
			if code(err) != codes.InvalidArgument {
				t.Fatalf("a bad update must be INVALID_ARGUMENT, got %s: %v", code(err), err)
			}
			return
		}
		switch {
		case !slices.Contains(mutableFields, field):
			t.Fatalf("field %q accepted", field)
		case next.AckDeadline < 0 || next.AckDeadline > maxSubAckDeadline:
			t.Fatalf("ack deadline %s accepted", next.AckDeadline)
		case next.MaxUnacked < 0 || next.MaxUnacked > server.MaxUnacked:
			t.Fatalf("max unacked %d accepted", next.MaxUnacked)
		case next.MaxDeliveryAttempts != 0 && (next.MaxDeliveryAttempts < minDeliveryAttempts || next.MaxDeliveryAttempts > maxDeliveryAttempts):
			t.Fatalf("max delivery attempts %d accepted", next.MaxDeliveryAttempts)
		case (next.MaxDeliveryAttempts == 0) != (next.DeadLetterTopic == ""):
			t.Fatalf("attempts %d with dead-letter topic %q accepted", next.MaxDeliveryAttempts, next.DeadLetterTopic)
		case slices.Contains(next.Topics, next.DeadLetterTopic):
			t.Fatalf("dead-letter topic %q is a topic of the subscription", next.DeadLetterTopic)
		case next.RetryMin > next.RetryMax || next.RetryMax > maxBackoff:
			t.Fatalf("backoff %s..%s accepted", next.RetryMin, next.RetryMax)
		case next.Version != cur.Version || !slices.Equal(next.Topics, cur.Topics) || next.Name != cur.Name:
			t.Fatalf("fixed fields changed: %+v", next)
		}
	})
}
