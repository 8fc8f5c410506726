package node

import (
	"cmp"
	"context"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/streamgate/streamgate/broker"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
	"github.com/streamgate/streamgate/ring"
)

// adminService implements the Admin gRPC service: members and assignments,
// from the gossiped view, with in-flight counts asked of each member.
type adminService struct {
	pb.UnimplementedAdminServer
	cfg     Config
	backend Backend
	subs    *subscribeService
	members Membership
}

func (a *adminService) ListMembers(context.Context, *pb.ListMembersRequest) (*pb.ListMembersResponse, error) {
	resp := &pb.ListMembersResponse{Self: a.cfg.NodeName}
	if a.members == nil {
		resp.Members = []*pb.Member{{Name: a.cfg.NodeName, State: "alive", Subscribers: uint32(a.localSubscribers())}}
		return resp, nil
	}
	view := a.members.View()
	for _, m := range a.members.Members() {
		pm := &pb.Member{Name: m.Name, GossipAddress: m.Addr, GrpcAddress: m.GRPCAddr, State: m.State}
		if st, ok := view.Nodes[m.Name]; ok {
			pm.Draining = st.Draining
			for _, ss := range st.Subscriptions {
				pm.Subscribers += uint32(len(ss.Subscribers))
				pm.ClaimedShards += uint32(len(ss.Claims))
			}
		}
		resp.Members = append(resp.Members, pm)
	}
	slices.SortFunc(resp.Members, func(x, y *pb.Member) int { return cmp.Compare(x.Name, y.Name) })
	return resp, nil
}

func (a *adminService) localSubscribers() int {
	a.subs.mu.Lock()
	defer a.subs.mu.Unlock()
	n := 0
	for _, r := range a.subs.subs {
		n += r.refs
	}
	return n
}

func (a *adminService) DescribeSubscription(ctx context.Context, req *pb.DescribeSubscriptionRequest) (*pb.DescribeSubscriptionResponse, error) {
	name := req.GetSubscription()
	if name == "" {
		return nil, grpcError(invalidf("subscription is empty"))
	}
	local := a.localShards(ctx, name)
	if req.GetLocalOnly() {
		resp := &pb.DescribeSubscriptionResponse{Subscription: name}
		for _, si := range local {
			resp.Shards = append(resp.Shards, &pb.ShardInfo{Shard: shardName(si.shard), InFlight: uint32(si.inFlight), ClaimedBy: claimedBy(si, a.cfg.NodeName)})
		}
		return resp, nil
	}

	resp := &pb.DescribeSubscriptionResponse{Subscription: name}
	var ids []string
	nodeOf := map[string]string{}
	claims := map[string]string{}
	var topics []string
	addSub := func(id, node string, ts []string, opened time.Time) {
		ids = append(ids, id)
		nodeOf[id] = node
		topics = sortedCopy(ts)
		resp.Subscribers = append(resp.Subscribers, &pb.SubscriberInfo{Id: id, Node: node, Topics: ts, OpenedAt: timestamppb.New(opened)})
	}
	if a.members != nil {
		view := a.members.View()
		for node, st := range view.Nodes {
			ss, ok := st.Subscriptions[name]
			if !ok {
				continue
			}
			for _, sub := range ss.Subscribers {
				addSub(sub.ID, node, sub.Topics, sub.OpenedAt)
			}
			for _, c := range ss.Claims {
				claims[c] = node
			}
		}
	} else if st, ok := a.subs.local.get(name); ok {
		for _, sub := range st.Subscribers {
			addSub(sub.ID, a.cfg.NodeName, sub.Topics, sub.OpenedAt)
		}
		for _, c := range st.Claims {
			claims[c] = a.cfg.NodeName
		}
	}
	if len(resp.Subscribers) == 0 && len(claims) == 0 && len(local) == 0 {
		return nil, grpcError(notFoundf("subscription %q has no subscribers in the cluster", name))
	}
	slices.SortFunc(resp.Subscribers, func(x, y *pb.SubscriberInfo) int { return cmp.Compare(x.Id, y.Id) })
	resp.Topics = topics

	inFlight := map[string]uint32{}
	for _, si := range local {
		inFlight[shardName(si.shard)] += uint32(si.inFlight)
	}
	if a.members != nil {
		for _, m := range a.members.Members() {
			if m.Name == a.cfg.NodeName || m.GRPCAddr == "" || m.State != "alive" {
				continue
			}
			for shard, n := range a.remoteInFlight(ctx, m.GRPCAddr, name) {
				inFlight[shard] += n
			}
		}
	}

	var shards []broker.ShardID
	if len(topics) > 0 {
		var err error
		if shards, err = a.backend.Shards(ctx, topics); err != nil {
			return nil, grpcError(err)
		}
	}
	names := make([]string, len(shards))
	for i, sh := range shards {
		names[i] = shardName(sh)
	}
	assign := ring.Assign(ids, names)
	backlog := map[broker.ShardID]int64{}
	if br, ok := a.backend.(broker.BacklogReporter); ok && len(shards) > 0 {
		if b, err := br.Backlog(ctx, name, shards); err == nil {
			backlog = b
		}
	}
	for i, sh := range shards {
		si := &pb.ShardInfo{Shard: names[i], SubscriberId: assign[names[i]], Node: nodeOf[assign[names[i]]],
			ClaimedBy: claims[names[i]], InFlight: inFlight[names[i]], Backlog: -1}
		if b, ok := backlog[sh]; ok {
			si.Backlog = b
		}
		resp.Shards = append(resp.Shards, si)
	}
	return resp, nil
}

func claimedBy(si shardInfo, node string) string {
	if si.claimed {
		return node
	}
	return ""
}

// localShards asks the local subscription (if any) for its shard states.
func (a *adminService) localShards(ctx context.Context, name string) []shardInfo {
	for _, sub := range a.subs.open() {
		if sub.name != name {
			continue
		}
		info := make(chan []shardInfo, 1)
		if !sub.send(ctx, event{kind: evDescribe, info: info}) {
			return nil
		}
		select {
		case si := <-info:
			return si
		case <-ctx.Done():
		case <-sub.done:
		}
	}
	return nil
}

// remoteInFlight asks another member for its first-hand shard states.
func (a *adminService) remoteInFlight(ctx context.Context, addr, name string) map[string]uint32 {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil
	}
	defer conn.Close()
	resp, err := pb.NewAdminClient(conn).DescribeSubscription(ctx, &pb.DescribeSubscriptionRequest{Subscription: name, LocalOnly: true})
	if err != nil {
		return nil
	}
	out := map[string]uint32{}
	for _, s := range resp.GetShards() {
		out[s.GetShard()] += s.GetInFlight()
	}
	return out
}
