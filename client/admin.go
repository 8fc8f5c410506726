package client

import (
	"context"
	"time"

	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Member is one node of the cluster.
type Member struct {
	Name, GRPCAddr, GossipAddr, State string
	Draining                          bool
	Subscribers, ClaimedShards        int
}

// Members lists the cluster's members as the node answering sees them, and
// that node's name.
func (c *Client) Members(ctx context.Context) (self string, members []Member, err error) {
	resp, err := pb.NewAdminClient(c.conn).ListMembers(ctx, &pb.ListMembersRequest{})
	if err != nil {
		return "", nil, err
	}
	for _, m := range resp.GetMembers() {
		members = append(members, Member{
			Name: m.GetName(), GRPCAddr: m.GetGrpcAddress(), GossipAddr: m.GetGossipAddress(), State: m.GetState(),
			Draining: m.GetDraining(), Subscribers: int(m.GetSubscribers()), ClaimedShards: int(m.GetClaimedShards()),
		})
	}
	return resp.GetSelf(), members, nil
}

// SubscriptionInfo describes a subscription across the cluster.
type SubscriptionInfo struct {
	Name        string
	Topics      []string
	Subscribers []SubscriberInfo
	Shards      []ShardInfo
}

// SubscriberInfo is one subscriber of a subscription.
type SubscriberInfo struct {
	ID, Node string
	Topics   []string
	OpenedAt time.Time
}

// ShardInfo is one shard of a subscription.
type ShardInfo struct {
	Shard        string
	SubscriberID string // the owner the assignment gives it
	Node         string // the owner's node
	ClaimedBy    string // the node reading it now
	InFlight     int
	// Backlog counts the messages after the shard's saved position, less
	// the acks saved with it; acks not saved yet (AckedUnsaved) still count
	// in it until the next save. Without a saved position (Saved false) it
	// counts from where a reader would start. -1: unknown.
	Backlog int64
	// AckedUnsaved counts messages acked by subscribers that the saved
	// position does not include yet (summed over the nodes that answered).
	AckedUnsaved int64
	// Saved says whether the subscription has a saved position on the
	// shard.
	Saved bool
}

// DescribeSubscription tells who owns and reads each shard of a
// subscription, and each shard's backlog and acks not saved yet. A
// subscription nobody is subscribed to is described from its saved
// positions (Subscribers is empty, and so are the shards' owners); one with
// neither subscribers nor saved positions fails with NOT_FOUND.
func (c *Client) DescribeSubscription(ctx context.Context, name string) (*SubscriptionInfo, error) {
	resp, err := pb.NewAdminClient(c.conn).DescribeSubscription(ctx, &pb.DescribeSubscriptionRequest{Subscription: name})
	if err != nil {
		return nil, err
	}
	out := &SubscriptionInfo{Name: resp.GetSubscription(), Topics: resp.GetTopics()}
	for _, s := range resp.GetSubscribers() {
		out.Subscribers = append(out.Subscribers, SubscriberInfo{ID: s.GetId(), Node: s.GetNode(), Topics: s.GetTopics(), OpenedAt: s.GetOpenedAt().AsTime()})
	}
	for _, s := range resp.GetShards() {
		out.Shards = append(out.Shards, ShardInfo{
			Shard: s.GetShard(), SubscriberID: s.GetSubscriberId(), Node: s.GetNode(), ClaimedBy: s.GetClaimedBy(),
			InFlight: int(s.GetInFlight()), Backlog: s.GetBacklog(), AckedUnsaved: s.GetAckedUnsaved(), Saved: s.GetSaved(),
		})
	}
	return out, nil
}
