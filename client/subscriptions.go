package client

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// SubscriptionConfig is a subscription's stored settings (the Admin API's
// Subscription resource). Zero values mean the server's defaults.
type SubscriptionConfig struct {
	Name   string
	Topics []string // set at creation; fixed after it
	// FromBeginning: shards without a saved position start at the earliest
	// message (else only new messages are delivered). Fixed after
	// creation; it wins over a Subscribe's FromBeginning.
	FromBeginning bool
	// AckDeadline is a delivered message's ack deadline, 1 s to 10 min in
	// whole seconds (rounded up); 0: the server's --ack-timeout.
	AckDeadline time.Duration
	// MaxUnacked caps each stream's un-acked messages; 0: the server's
	// --max-unacked, which also bounds it.
	MaxUnacked int
	// MaxDeliveryAttempts: 0 is off; else 5..100, and a message nacked or
	// timed out on that delivery is published to DeadLetterTopic (an
	// existing topic, not one of Topics) and acked here.
	MaxDeliveryAttempts int
	DeadLetterTopic     string
	// MinBackoff and MaxBackoff bound the redelivery backoff of a message
	// nacked without a delay, or timed out: doubling from MinBackoff with
	// each attempt up to MaxBackoff, 0 to 10 min each; 0 and 0: at once.
	MinBackoff, MaxBackoff time.Duration
	// Version is the server's, raised by every change.
	Version int64
	// Created and Updated are the server's.
	Created, Updated time.Time
}

// The fields UpdateSubscription changes, by their API names.
const (
	FieldAckDeadline         = "ack_deadline_seconds"
	FieldMaxUnacked          = "max_unacked"
	FieldMaxDeliveryAttempts = "max_delivery_attempts"
	FieldDeadLetterTopic     = "dead_letter_topic"
	FieldRetryPolicy         = "retry_policy" // MinBackoff and MaxBackoff
)

// maxSettingDuration bounds a subscription's durations (the API's 600 s).
const maxSettingDuration = 600 * time.Second

// CreateSubscription stores a new subscription and returns it as stored.
// ALREADY_EXISTS: the name is taken; NOT_FOUND: a topic does not exist;
// INVALID_ARGUMENT: a setting is out of range; UNIMPLEMENTED: the
// server's backend keeps no subscriptions.
func (c *Client) CreateSubscription(ctx context.Context, sub SubscriptionConfig) (*SubscriptionConfig, error) {
	p, err := subscriptionToPB(sub)
	if err != nil {
		return nil, err
	}
	resp, err := pb.NewAdminClient(c.conn).CreateSubscription(ctx, &pb.CreateSubscriptionRequest{Subscription: p})
	if err != nil {
		return nil, err
	}
	return subscriptionFromPB(resp), nil
}

// GetSubscription returns a subscription's stored settings; NOT_FOUND
// when there is none.
func (c *Client) GetSubscription(ctx context.Context, name string) (*SubscriptionConfig, error) {
	resp, err := pb.NewAdminClient(c.conn).GetSubscription(ctx, &pb.GetSubscriptionRequest{Name: name})
	if err != nil {
		return nil, err
	}
	return subscriptionFromPB(resp), nil
}

// UpdateSubscription changes the named fields (Field...) of sub.Name to
// sub's values and returns the subscription as stored. With sub.Version
// non-zero the change applies only to that version (else ABORTED).
func (c *Client) UpdateSubscription(ctx context.Context, sub SubscriptionConfig, fields ...string) (*SubscriptionConfig, error) {
	p, err := subscriptionToPB(sub)
	if err != nil {
		return nil, err
	}
	p.Version = sub.Version
	resp, err := pb.NewAdminClient(c.conn).UpdateSubscription(ctx, &pb.UpdateSubscriptionRequest{Subscription: p, UpdateMask: fields})
	if err != nil {
		return nil, err
	}
	return subscriptionFromPB(resp), nil
}

// ListSubscriptions returns every stored subscription, sorted by name.
func (c *Client) ListSubscriptions(ctx context.Context) ([]SubscriptionConfig, error) {
	resp, err := pb.NewAdminClient(c.conn).ListSubscriptions(ctx, &pb.ListSubscriptionsRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]SubscriptionConfig, 0, len(resp.GetSubscriptions()))
	for _, s := range resp.GetSubscriptions() {
		out = append(out, *subscriptionFromPB(s))
	}
	return out, nil
}

// DeleteSubscription removes a subscription: its streams end with
// NOT_FOUND; its saved positions stay. With version non-zero it applies
// only to that version (else ABORTED).
func (c *Client) DeleteSubscription(ctx context.Context, name string, version int64) error {
	_, err := pb.NewAdminClient(c.conn).DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{Name: name, Version: version})
	return err
}

// SeekPosition is where Seek moves a subscription: SeekEarliest,
// SeekLatest or SeekTime.
type SeekPosition struct {
	to pb.SeekTarget
	at time.Time
}

var (
	// SeekEarliest: the first message each shard still holds.
	SeekEarliest = SeekPosition{to: pb.SeekTarget_SEEK_TARGET_EARLIEST}
	// SeekLatest: after the last message; only new ones are delivered.
	SeekLatest = SeekPosition{to: pb.SeekTarget_SEEK_TARGET_LATEST}
)

// SeekTime is each shard's first message published at or after t (the
// shard's end when there is none).
func SeekTime(t time.Time) SeekPosition { return SeekPosition{at: t} }

// Seek moves every shard's saved position of a subscription, across the
// cluster, while its subscribers stay connected: messages they hold are
// void and delivery restarts at the new position. It returns the shards
// moved.
func (c *Client) Seek(ctx context.Context, subscription string, to SeekPosition) ([]string, error) {
	req := &pb.SeekRequest{Subscription: subscription}
	switch {
	case to.to != pb.SeekTarget_SEEK_TARGET_UNSPECIFIED:
		req.Target = &pb.SeekRequest_To{To: to.to}
	case !to.at.IsZero():
		req.Target = &pb.SeekRequest_Time{Time: timestamppb.New(to.at)}
	default:
		return nil, status.Error(codes.InvalidArgument, "streamgate: seek: no position: use SeekEarliest, SeekLatest or SeekTime")
	}
	resp, err := pb.NewAdminClient(c.conn).Seek(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetShards(), nil
}

func subscriptionToPB(s SubscriptionConfig) (*pb.Subscription, error) {
	ack, err := wholeSeconds("ack deadline", s.AckDeadline, maxSettingDuration)
	if err != nil {
		return nil, err
	}
	minB, err := wholeSeconds("minimum backoff", s.MinBackoff, maxSettingDuration)
	if err != nil {
		return nil, err
	}
	maxB, err := wholeSeconds("maximum backoff", s.MaxBackoff, maxSettingDuration)
	if err != nil {
		return nil, err
	}
	if s.MaxUnacked < 0 || s.MaxDeliveryAttempts < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "streamgate: max unacked %d and max delivery attempts %d: want 0 or more", s.MaxUnacked, s.MaxDeliveryAttempts)
	}
	p := &pb.Subscription{
		Name: s.Name, Topics: s.Topics, StartPosition: pb.StartPosition_START_POSITION_LATEST,
		AckDeadlineSeconds: ack, MaxUnacked: uint32(s.MaxUnacked), MaxDeliveryAttempts: uint32(s.MaxDeliveryAttempts),
		DeadLetterTopic: s.DeadLetterTopic,
	}
	if s.FromBeginning {
		p.StartPosition = pb.StartPosition_START_POSITION_EARLIEST
	}
	if minB > 0 || maxB > 0 {
		p.RetryPolicy = &pb.RetryPolicy{MinimumBackoffSeconds: minB, MaximumBackoffSeconds: maxB}
	}
	return p, nil
}

func subscriptionFromPB(p *pb.Subscription) *SubscriptionConfig {
	s := &SubscriptionConfig{
		Name: p.GetName(), Topics: p.GetTopics(),
		FromBeginning:       p.GetStartPosition() == pb.StartPosition_START_POSITION_EARLIEST,
		AckDeadline:         time.Duration(p.GetAckDeadlineSeconds()) * time.Second,
		MaxUnacked:          int(p.GetMaxUnacked()),
		MaxDeliveryAttempts: int(p.GetMaxDeliveryAttempts()),
		DeadLetterTopic:     p.GetDeadLetterTopic(),
		MinBackoff:          time.Duration(p.GetRetryPolicy().GetMinimumBackoffSeconds()) * time.Second,
		MaxBackoff:          time.Duration(p.GetRetryPolicy().GetMaximumBackoffSeconds()) * time.Second,
		Version:             p.GetVersion(),
	}
	if p.GetCreateTime() != nil {
		s.Created = p.GetCreateTime().AsTime()
	}
	if p.GetUpdateTime() != nil {
		s.Updated = p.GetUpdateTime().AsTime()
	}
	return s
}
