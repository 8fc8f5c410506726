// Subscriptions as resources (Admin's CreateSubscription ...
// DeleteSubscription): requests are checked here, field by field, and the
// settings kept by the backend's broker.SubscriptionStore, which every node
// reads. A backend without a store answers these methods with
// UNIMPLEMENTED and serves every subscription with the server's defaults.
//
// Defaults are resolved at use, not when stored: ack_deadline_seconds 0
// and max_unacked 0 are stored as 0 and mean the serving node's
// --ack-timeout and --max-unacked (settingsFor). So a change of those flags
// reaches every subscription that did not choose its own, and a node's
// sub-second --ack-timeout (tests) is kept exactly.

package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/streamgate/streamgate/broker"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Bounds of a subscription's settings (the proto's comments).
const (
	maxSubAckDeadline    = 600 * time.Second
	minDeliveryAttempts  = 5
	maxDeliveryAttempts  = 100
	maxBackoff           = 600 * time.Second
	updateRetries        = 5 // read-modify-write rounds of an update without a version
	subscriptionStoreMsg = "this backend keeps no subscription settings: subscriptions are created implicitly by Subscribe with the server's defaults"
)

// mutable are the fields an update may change; fixed ones are set at
// creation; output ones are the server's.
var (
	mutableFields = []string{"ack_deadline_seconds", "max_unacked", "max_delivery_attempts", "dead_letter_topic", "retry_policy", "ordering"}
	fixedFields   = []string{"name", "topics", "start_position"}
	outputFields  = []string{"version", "create_time", "update_time"}
)

// store is the backend's subscription store, or UNIMPLEMENTED.
func (a *adminService) store() (broker.SubscriptionStore, error) {
	st, ok := a.backend.(broker.SubscriptionStore)
	if !ok {
		return nil, &codedError{code: codes.Unimplemented, msg: subscriptionStoreMsg}
	}
	return st, nil
}

// CreateSubscription stores a new subscription; ALREADY_EXISTS when the
// name is taken.
func (a *adminService) CreateSubscription(ctx context.Context, req *pb.CreateSubscriptionRequest) (*pb.Subscription, error) {
	st, err := a.store()
	if err != nil {
		return nil, grpcError(err)
	}
	cfg, err := a.checkNew(ctx, req.GetSubscription())
	if err != nil {
		return nil, grpcError(err)
	}
	stored, err := st.CreateSubscription(ctx, cfg)
	if err != nil {
		return nil, grpcError(storeError(cfg.Name, err))
	}
	return subscriptionToPB(stored), nil
}

// GetSubscription answers with the stored settings; NOT_FOUND when none.
func (a *adminService) GetSubscription(ctx context.Context, req *pb.GetSubscriptionRequest) (*pb.Subscription, error) {
	st, err := a.store()
	if err != nil {
		return nil, grpcError(err)
	}
	if err := checkSubscriptionName(req.GetName()); err != nil {
		return nil, grpcError(err)
	}
	cfg, err := st.GetSubscription(ctx, req.GetName())
	if err != nil {
		return nil, grpcError(storeError(req.GetName(), err))
	}
	return subscriptionToPB(cfg), nil
}

// ListSubscriptions answers with every stored subscription, by name.
func (a *adminService) ListSubscriptions(ctx context.Context, _ *pb.ListSubscriptionsRequest) (*pb.ListSubscriptionsResponse, error) {
	st, err := a.store()
	if err != nil {
		return nil, grpcError(err)
	}
	cfgs, err := st.ListSubscriptions(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	resp := &pb.ListSubscriptionsResponse{}
	for _, c := range cfgs {
		resp.Subscriptions = append(resp.Subscriptions, subscriptionToPB(c))
	}
	return resp, nil
}

// DeleteSubscription removes the stored settings; every node ends the
// subscription's streams with NOT_FOUND (watchSubscriptions).
func (a *adminService) DeleteSubscription(ctx context.Context, req *pb.DeleteSubscriptionRequest) (*pb.DeleteSubscriptionResponse, error) {
	st, err := a.store()
	if err != nil {
		return nil, grpcError(err)
	}
	if err := checkSubscriptionName(req.GetName()); err != nil {
		return nil, grpcError(err)
	}
	if req.GetVersion() < 0 {
		return nil, grpcError(invalidf("version %d is negative", req.GetVersion()))
	}
	if err := st.DeleteSubscription(ctx, req.GetName(), req.GetVersion()); err != nil {
		return nil, grpcError(storeError(req.GetName(), err))
	}
	return &pb.DeleteSubscriptionResponse{}, nil
}

// UpdateSubscription changes the fields update_mask names. With a version
// the change applies only to that version (else ABORTED); without one it
// applies to the latest, read and written compare-and-set so that a
// concurrent change of other fields is not lost.
func (a *adminService) UpdateSubscription(ctx context.Context, req *pb.UpdateSubscriptionRequest) (*pb.Subscription, error) {
	st, err := a.store()
	if err != nil {
		return nil, grpcError(err)
	}
	in := req.GetSubscription()
	if in == nil {
		return nil, grpcError(invalidf("subscription is missing"))
	}
	if err := checkSubscriptionName(in.GetName()); err != nil {
		return nil, grpcError(err)
	}
	if err := checkMask(req.GetUpdateMask()); err != nil {
		return nil, grpcError(err)
	}
	if in.GetVersion() < 0 {
		return nil, grpcError(invalidf("version %d is negative", in.GetVersion()))
	}
	for round := 0; ; round++ {
		cur, err := st.GetSubscription(ctx, in.GetName())
		if err != nil {
			return nil, grpcError(storeError(in.GetName(), err))
		}
		if v := in.GetVersion(); v != 0 && v != cur.Version {
			return nil, grpcError(storeError(in.GetName(), fmt.Errorf("%w: %q is at version %d, not %d", broker.ErrVersionMismatch, in.GetName(), cur.Version, v)))
		}
		next, err := applyMask(cur, in, req.GetUpdateMask())
		if err == nil {
			err = a.checkSettings(ctx, next)
		}
		if err != nil {
			return nil, grpcError(err)
		}
		stored, err := st.UpdateSubscription(ctx, next)
		if err == nil {
			return subscriptionToPB(stored), nil
		}
		if in.GetVersion() != 0 || !errors.Is(err, broker.ErrVersionMismatch) || round == updateRetries {
			return nil, grpcError(storeError(in.GetName(), err))
		}
		// Changed by someone else since our read: apply the mask to the
		// newer settings.
	}
}

// storeError words a store's sentinel for the API, the same from every
// backend; other errors pass.
func storeError(name string, err error) error {
	switch {
	case errors.Is(err, broker.ErrSubscriptionNotFound):
		return &wordedError{msg: fmt.Sprintf("subscription %q not found", name), err: err}
	case errors.Is(err, broker.ErrSubscriptionExists):
		return &wordedError{msg: fmt.Sprintf("subscription %q already exists", name), err: err}
	case errors.Is(err, broker.ErrVersionMismatch):
		return &wordedError{msg: err.Error() + " (read it again and retry)", err: err}
	}
	return err
}

// wordedError is a store's error (its sentinel kept for grpcError) with the
// node's own message.
type wordedError struct {
	msg string
	err error
}

func (e *wordedError) Error() string { return e.msg }
func (e *wordedError) Unwrap() error { return e.err }

// checkNew checks a create request's subscription and turns it into the
// settings to store.
func (a *adminService) checkNew(ctx context.Context, in *pb.Subscription) (broker.SubscriptionConfig, error) {
	if in == nil {
		return broker.SubscriptionConfig{}, invalidf("subscription is missing")
	}
	if err := checkSubscriptionName(in.GetName()); err != nil {
		return broker.SubscriptionConfig{}, err
	}
	topics, err := checkTopics("topics", in.GetTopics())
	if err != nil {
		return broker.SubscriptionConfig{}, err
	}
	cfg := broker.SubscriptionConfig{Name: in.GetName(), Topics: topics}
	switch in.GetStartPosition() {
	case pb.StartPosition_START_POSITION_UNSPECIFIED, pb.StartPosition_START_POSITION_LATEST:
		cfg.Start = broker.StartLatest
	case pb.StartPosition_START_POSITION_EARLIEST:
		cfg.Start = broker.StartEarliest
	default:
		return cfg, invalidf("unknown start_position %d", in.GetStartPosition())
	}
	for _, f := range mutableFields {
		if err := setField(&cfg, in, f); err != nil {
			return cfg, err
		}
	}
	// Checked before the backend is asked: a bad value is reported as
	// such even when a topic is missing too.
	if err := checkValues(cfg, a.cfg); err != nil {
		return cfg, err
	}
	if _, err := a.backend.Shards(ctx, cfg.Topics); err != nil {
		return cfg, topicError(err)
	}
	return cfg, a.checkDeadLetter(ctx, cfg)
}

// checkSettings checks an update's result.
func (a *adminService) checkSettings(ctx context.Context, cfg broker.SubscriptionConfig) error {
	if err := checkValues(cfg, a.cfg); err != nil {
		return err
	}
	return a.checkDeadLetter(ctx, cfg)
}

// checkDeadLetter: the dead-letter topic exists.
func (a *adminService) checkDeadLetter(ctx context.Context, cfg broker.SubscriptionConfig) error {
	if cfg.DeadLetterTopic == "" {
		return nil
	}
	if _, err := a.backend.Shards(ctx, []string{cfg.DeadLetterTopic}); err != nil {
		if errors.Is(err, broker.ErrTopicNotFound) {
			return notFoundf("dead_letter_topic %q does not exist", cfg.DeadLetterTopic)
		}
		return err
	}
	return nil
}

// topicError words a missing topic for the Admin API.
func topicError(err error) error {
	if errors.Is(err, broker.ErrTopicNotFound) {
		return fmt.Errorf("topics: %w", err)
	}
	return err
}

// checkValues checks every setting's range and how they go together.
func checkValues(cfg broker.SubscriptionConfig, server Config) error {
	switch {
	case cfg.AckDeadline < 0 || cfg.AckDeadline > maxSubAckDeadline:
		return invalidf("ack_deadline_seconds %d is out of range: want 1..%d, or 0 for the server's default", cfg.AckDeadline/time.Second, int(maxSubAckDeadline/time.Second))
	case cfg.MaxUnacked < 0 || cfg.MaxUnacked > server.MaxUnacked:
		return invalidf("max_unacked %d is out of range: want 1..%d (the server's --max-unacked), or 0 for that", cfg.MaxUnacked, server.MaxUnacked)
	case cfg.MaxDeliveryAttempts != 0 && (cfg.MaxDeliveryAttempts < minDeliveryAttempts || cfg.MaxDeliveryAttempts > maxDeliveryAttempts):
		return invalidf("max_delivery_attempts %d is out of range: want %d..%d, or 0 for off", cfg.MaxDeliveryAttempts, minDeliveryAttempts, maxDeliveryAttempts)
	case cfg.MaxDeliveryAttempts != 0 && cfg.DeadLetterTopic == "":
		return invalidf("max_delivery_attempts %d needs a dead_letter_topic", cfg.MaxDeliveryAttempts)
	case cfg.MaxDeliveryAttempts == 0 && cfg.DeadLetterTopic != "":
		return invalidf("dead_letter_topic %q is set but max_delivery_attempts is 0 (off): set both or neither", cfg.DeadLetterTopic)
	case cfg.RetryMin < 0 || cfg.RetryMin > maxBackoff || cfg.RetryMax < 0 || cfg.RetryMax > maxBackoff:
		return invalidf("retry_policy: backoffs %d and %d seconds: each want 0..%d", cfg.RetryMin/time.Second, cfg.RetryMax/time.Second, int(maxBackoff/time.Second))
	case cfg.RetryMin > cfg.RetryMax:
		return invalidf("retry_policy: minimum_backoff_seconds %d is over maximum_backoff_seconds %d", cfg.RetryMin/time.Second, cfg.RetryMax/time.Second)
	}
	if cfg.DeadLetterTopic != "" {
		if err := checkTopicName("dead_letter_topic", cfg.DeadLetterTopic); err != nil {
			return err
		}
		if slices.Contains(cfg.Topics, cfg.DeadLetterTopic) {
			return invalidf("dead_letter_topic %q is one of the subscription's topics: dead letters would be delivered again", cfg.DeadLetterTopic)
		}
	}
	return nil
}

// checkMask: at least one field, each one an update may change.
func checkMask(mask []string) error {
	if len(mask) == 0 {
		return invalidf("update_mask is empty: name the fields to change (%v)", mutableFields)
	}
	for _, f := range mask {
		switch {
		case slices.Contains(mutableFields, f):
		case slices.Contains(fixedFields, f):
			return invalidf("update_mask: %s is fixed after creation (delete the subscription and create it again)", f)
		case slices.Contains(outputFields, f):
			return invalidf("update_mask: %s is set by the server", f)
		default:
			return invalidf("update_mask: unknown field %q; the fields an update changes are %v", f, mutableFields)
		}
	}
	return nil
}

// applyMask is cur with the masked fields taken from in.
func applyMask(cur broker.SubscriptionConfig, in *pb.Subscription, mask []string) (broker.SubscriptionConfig, error) {
	next := cur
	next.Topics = slices.Clone(cur.Topics)
	for _, f := range mask {
		if err := setField(&next, in, f); err != nil {
			return next, err
		}
	}
	return next, nil
}

// setField copies one mutable field of in into cfg.
func setField(cfg *broker.SubscriptionConfig, in *pb.Subscription, field string) error {
	switch field {
	case "ack_deadline_seconds":
		cfg.AckDeadline = time.Duration(in.GetAckDeadlineSeconds()) * time.Second
	case "max_unacked":
		cfg.MaxUnacked = int(in.GetMaxUnacked())
	case "max_delivery_attempts":
		cfg.MaxDeliveryAttempts = int(in.GetMaxDeliveryAttempts())
	case "dead_letter_topic":
		cfg.DeadLetterTopic = in.GetDeadLetterTopic()
	case "retry_policy":
		cfg.RetryMin = time.Duration(in.GetRetryPolicy().GetMinimumBackoffSeconds()) * time.Second
		cfg.RetryMax = time.Duration(in.GetRetryPolicy().GetMaximumBackoffSeconds()) * time.Second
	case "ordering":
		// Shard order is the one ordering there is; nothing is stored.
		switch in.GetOrdering() {
		case pb.Ordering_ORDERING_UNSPECIFIED, pb.Ordering_ORDERING_SHARD:
		default:
			return invalidf("unknown ordering %d", in.GetOrdering())
		}
	}
	return nil
}

// checkSubscriptionName: a subscription's name is non-empty UTF-8 of at
// most 249 bytes (Kafka's limit on group names that streamgate keeps for
// every backend).
func checkSubscriptionName(name string) error {
	switch {
	case name == "":
		return invalidf("name is empty")
	case len(name) > maxNameBytes || !utf8.ValidString(name):
		return invalidf("name must be valid UTF-8 of at most %d bytes", maxNameBytes)
	}
	return nil
}

// checkTopics checks a list of topic names and returns it sorted, without
// duplicates.
func checkTopics(what string, topics []string) ([]string, error) {
	if len(topics) == 0 {
		return nil, invalidf("%s: none given; a subscription reads at least one topic", what)
	}
	var out []string
	for _, t := range topics {
		if err := checkTopicName(what, t); err != nil {
			return nil, err
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out, nil
}

func checkTopicName(what, t string) error {
	switch {
	case t == "":
		return invalidf("%s: a topic name is empty", what)
	case len(t) > maxNameBytes || !utf8.ValidString(t):
		return invalidf("%s: topic names must be valid UTF-8 of at most %d bytes", what, maxNameBytes)
	}
	return nil
}

// subscriptionToPB is the API's view of stored settings.
func subscriptionToPB(c broker.SubscriptionConfig) *pb.Subscription {
	out := &pb.Subscription{
		Name:                c.Name,
		Topics:              slices.Clone(c.Topics),
		StartPosition:       pb.StartPosition_START_POSITION_LATEST,
		AckDeadlineSeconds:  uint32(c.AckDeadline / time.Second),
		MaxUnacked:          uint32(c.MaxUnacked),
		MaxDeliveryAttempts: uint32(c.MaxDeliveryAttempts),
		DeadLetterTopic:     c.DeadLetterTopic,
		Ordering:            pb.Ordering_ORDERING_SHARD,
		Version:             c.Version,
	}
	if c.Start == broker.StartEarliest {
		out.StartPosition = pb.StartPosition_START_POSITION_EARLIEST
	}
	if c.RetryMin > 0 || c.RetryMax > 0 {
		out.RetryPolicy = &pb.RetryPolicy{MinimumBackoffSeconds: uint32(c.RetryMin / time.Second), MaximumBackoffSeconds: uint32(c.RetryMax / time.Second)}
	}
	if !c.Created.IsZero() {
		out.CreateTime = timestamppb.New(c.Created)
	}
	if !c.Updated.IsZero() {
		out.UpdateTime = timestamppb.New(c.Updated)
	}
	return out
}
