package node

import (
	"cmp"
	"context"
	"slices"
	"time"

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
	peers   memberDialer
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

// DescribeSubscription answers with the subscription's subscribers, the
// assignment, and every shard's progress: the backlog as saved by the
// backend and the acks not saved yet (this node's and, asked with
// local_only, every other member's). With nobody subscribed the backend's
// saved positions tell the topics and the progress; a subscription with
// neither subscribers nor saved positions is NOT_FOUND.
func (a *adminService) DescribeSubscription(ctx context.Context, req *pb.DescribeSubscriptionRequest) (*pb.DescribeSubscriptionResponse, error) {
	name := req.GetSubscription()
	if name == "" {
		return nil, grpcError(invalidf("subscription is empty"))
	}
	local := a.localShards(ctx, name)
	insp, _ := a.backend.(broker.Inspector)
	var unsavedHere map[broker.ShardID]int64
	if insp != nil {
		// Right after the in-flight counts, so the two agree as far as
		// they can: an ack leaves in-flight before it reaches the backend.
		unsavedHere = insp.Unsaved(name)
	}
	if req.GetLocalOnly() {
		return a.describeLocal(name, local, unsavedHere), nil
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
	active := len(resp.Subscribers) > 0 || len(claims) > 0 || len(local) > 0

	// Nobody subscribed: the saved positions name the topics and shards.
	var saved []broker.ShardProgress
	if len(resp.Subscribers) == 0 {
		if insp != nil {
			var err error
			saved, err = insp.Inspect(ctx, name, nil)
			if err != nil && !active {
				return nil, grpcError(err)
			}
			for _, p := range saved {
				if !slices.Contains(topics, p.Shard.Topic) {
					topics = append(topics, p.Shard.Topic)
				}
			}
			slices.Sort(topics)
		}
		if !active && len(saved) == 0 {
			if insp == nil {
				return nil, grpcError(notFoundf("subscription %q has no subscribers in the cluster", name))
			}
			return nil, grpcError(notFoundf("subscription %q has no subscribers and no saved positions", name))
		}
	}
	slices.SortFunc(resp.Subscribers, func(x, y *pb.SubscriberInfo) int { return cmp.Compare(x.Id, y.Id) })
	resp.Topics = topics

	inFlight := map[string]uint32{}
	unsaved := map[string]int64{}
	for _, si := range local {
		inFlight[shardName(si.shard)] += uint32(si.inFlight)
	}
	for sh, n := range unsavedHere {
		unsaved[shardName(sh)] += n
	}
	if a.members != nil {
		for _, m := range a.members.Members() {
			if m.Name == a.cfg.NodeName || m.GRPCAddr == "" || m.State != "alive" {
				continue
			}
			for _, s := range a.remoteShards(ctx, m.GRPCAddr, name) {
				inFlight[s.GetShard()] += s.GetInFlight()
				unsaved[s.GetShard()] += s.GetAckedUnsaved()
			}
		}
	}

	var shards []broker.ShardID
	progress := map[broker.ShardID]broker.ShardProgress{}
	switch {
	case len(resp.Subscribers) == 0:
		for _, p := range saved {
			shards = append(shards, p.Shard)
			progress[p.Shard] = p
		}
	case len(topics) > 0:
		var err error
		if shards, err = a.backend.Shards(ctx, topics); err != nil {
			return nil, grpcError(err)
		}
		for sh, p := range a.progress(ctx, name, topics, shards) {
			progress[sh] = p
		}
	}
	names := make([]string, len(shards))
	for i, sh := range shards {
		names[i] = shardName(sh)
	}
	assign := ring.Assign(ids, names)
	for i, sh := range shards {
		si := &pb.ShardInfo{Shard: names[i], SubscriberId: assign[names[i]], Node: nodeOf[assign[names[i]]],
			ClaimedBy: claims[names[i]], InFlight: inFlight[names[i]], Backlog: -1, AckedUnsaved: unsaved[names[i]]}
		if p, ok := progress[sh]; ok {
			si.Backlog, si.Saved = p.Backlog, p.Saved
		}
		resp.Shards = append(resp.Shards, si)
	}
	return resp, nil
}

// progress is each shard's saved progress, from the backend's Inspector
// or, lacking one, its BacklogReporter (which cannot say whether a
// position is saved). Shards the backend could not tell about are absent.
func (a *adminService) progress(ctx context.Context, name string, topics []string, shards []broker.ShardID) map[broker.ShardID]broker.ShardProgress {
	out := map[broker.ShardID]broker.ShardProgress{}
	if insp, ok := a.backend.(broker.Inspector); ok {
		ps, err := insp.Inspect(ctx, name, topics)
		if err == nil {
			for _, p := range ps {
				out[p.Shard] = p
			}
		}
		return out
	}
	if br, ok := a.backend.(broker.BacklogReporter); ok && len(shards) > 0 {
		if b, err := br.Backlog(ctx, name, shards); err == nil {
			for sh, n := range b {
				out[sh] = broker.ShardProgress{Shard: sh, Backlog: n}
			}
		}
	}
	return out
}

// describeLocal is the local_only answer: the shards this node claims or
// has messages of in flight, and those it holds acks of that are not
// saved yet.
func (a *adminService) describeLocal(name string, local []shardInfo, unsaved map[broker.ShardID]int64) *pb.DescribeSubscriptionResponse {
	resp := &pb.DescribeSubscriptionResponse{Subscription: name}
	seen := map[broker.ShardID]bool{}
	for _, si := range local {
		seen[si.shard] = true
		resp.Shards = append(resp.Shards, &pb.ShardInfo{Shard: shardName(si.shard), InFlight: uint32(si.inFlight),
			ClaimedBy: claimedBy(si, a.cfg.NodeName), AckedUnsaved: unsaved[si.shard]})
	}
	var rest []broker.ShardID
	for sh := range unsaved {
		if !seen[sh] {
			rest = append(rest, sh)
		}
	}
	slices.SortFunc(rest, func(x, y broker.ShardID) int {
		return cmp.Or(cmp.Compare(x.Topic, y.Topic), cmp.Compare(x.Index, y.Index))
	})
	for _, sh := range rest {
		resp.Shards = append(resp.Shards, &pb.ShardInfo{Shard: shardName(sh), AckedUnsaved: unsaved[sh]})
	}
	return resp
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

// remoteShards asks another member for its first-hand shard states (in
// flight, acks not saved yet); nil when it does not answer in time.
func (a *adminService) remoteShards(ctx context.Context, addr, name string) []*pb.ShardInfo {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := a.peers.dial(addr)
	if err != nil {
		return nil
	}
	defer conn.Close()
	resp, err := pb.NewAdminClient(conn).DescribeSubscription(ctx, &pb.DescribeSubscriptionRequest{Subscription: name, LocalOnly: true})
	if err != nil {
		return nil
	}
	return resp.GetShards()
}
