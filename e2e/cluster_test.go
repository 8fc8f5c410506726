package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	dockerclient "github.com/moby/moby/client"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/client"
)

const gossipPort = "7946"

// TestE2E_ThreeNodeClusterSurvivesAKilledNode runs three gateway containers
// n1..n3 on one devbroker, subscribers of one subscription on n2 and n3,
// publishes through n1, and SIGKILLs n3's container half-way, once n3 has
// saved part of what it acked: n2 must end up with every message n3 had not
// received (at-least-once, nothing lost) and none that n3 had saved, each
// subscriber's stream must keep every shard in broker order with stable
// message ids, and n1 must see the cluster shrink to two members. Every
// node serves TLS (also to the other nodes' describe fan-out) and requires
// a bearer token, with a policy: the test's clients connect with TLS and a
// token, and one without a token is UNAUTHENTICATED. n1 has no subscriber:
// the claims it describes come from n2's and n3's Admin API, which n1 calls
// over TLS with its cluster token.
func TestE2E_ThreeNodeClusterSurvivesAKilledNode(t *testing.T) {
	requireDocker(t)
	const (
		topic        = "t"
		partitions   = 6
		subscription = "e2e"
		count        = 3000
		batchSize    = 50
		// Publishing comes in three phases: A before phaseB, B from phaseB
		// to phaseC, C from phaseC on. Multiples of batchSize, so the client
		// has sent every message of a phase while the iterator waits.
		phaseB = 1000
		phaseC = 2000
		// n3 is killed once it has received this many messages of phase B.
		n3OfB = 50
	)
	ctx, cancel := context.WithTimeout(t.Context(), 75*time.Second)
	defer cancel()
	start := time.Now()

	// 1. The broker and three nodes on one network, nodes at pinned IPs
	// (memberlist gossips them).
	nw, subnet := newPinnedNetwork(t)
	broker := startBroker(t, nw, topic, partitions)
	names := []string{"n1", "n2", "n3"}
	nodes := map[string]*testcontainers.DockerContainer{}
	clients := map[string]*client.Client{}
	seed := nodeIP(subnet, 0)
	sec := newSecureCluster(t, subnet, names, topic, subscription)
	addrs := map[string]string{}
	for i, name := range names {
		nodes[name] = startClusterNode(t, nw, name, nodeIP(subnet, i), seed, sec)
		addr, err := nodes[name].PortEndpoint(ctx, grpcPort, "")
		require.NoError(t, err)
		addrs[name] = addr
		c := sec.dial(t, addr, name, clientIdentity)
		defer c.Close()
		clients[name] = c
	}
	// Listing the members takes admin, which the publishing and subscribing
	// identity does not have.
	admin := sec.dial(t, addrs["n1"], "n1", opsIdentity)
	defer admin.Close()
	t.Logf("broker and 3 nodes started in %s (subnet %s)", time.Since(start).Round(time.Millisecond), subnet)

	// 2. n1 sees all three alive; a client without a token is turned away.
	waitMembers(ctx, t, admin, names, 20*time.Second)
	requireUnauthenticated(ctx, t, sec, addrs["n2"], "n2")
	t.Logf("n1 lists n1, n2, n3 alive after %s", time.Since(start).Round(time.Millisecond))

	// 3. Subscribers on n2 and n3, each acking everything it receives, and
	// the shards split between them before anything is published, so that
	// each stream carries only its own shards until the kill.
	subs := map[string]*streamLog{}
	var wg sync.WaitGroup
	defer wg.Wait() // after the deferred Close calls below (LIFO)
	for _, name := range []string{"n2", "n3"} {
		s, err := clients[name].Subscribe(ctx, client.SubscribeOptions{
			Subscription: subscription, Topics: []string{topic}, FromBeginning: true,
		})
		require.NoError(t, err, "subscribe on %s", name)
		require.Equal(t, name, s.Node, "the subscriber's node")
		defer s.Close()
		l := &streamLog{name: name, done: make(chan struct{})}
		subs[name] = l
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(s)
		}()
	}
	owners := waitAssignment(ctx, t, clients["n1"], subscription, partitions, 20*time.Second)
	n3Shards := map[string]bool{}
	for shard, node := range owners {
		if node == "n3" {
			n3Shards[shard] = true
		}
	}
	t.Logf("assignment settled: %v", owners)

	// 4. Publish through n1 on one stream, in three phases the iterator
	// holds apart: A, then (once n3 has saved its acks of A) B, and C only
	// after n3 has been killed.
	msgs := testMessages(topic, count)
	releaseB, killed := make(chan struct{}), make(chan struct{})
	gates := map[int]<-chan struct{}{phaseB: releaseB, phaseC: killed}
	resultsOfA := make(chan struct{}) // closed when A has all its results
	type publishOutcome struct {
		results map[string]client.Result
		err     error
	}
	published := make(chan publishOutcome, 1)
	publishDone := make(chan struct{})
	defer func() { cancel(); <-publishDone }()
	go func() {
		defer close(publishDone)
		results := make(map[string]client.Result, count)
		seq := func(yield func(client.Message) bool) {
			for i, m := range msgs {
				if gate, ok := gates[i]; ok {
					select {
					case <-gate:
					case <-ctx.Done():
						return
					}
				}
				if !yield(m) {
					return
				}
			}
		}
		err := clients["n1"].Publish(ctx, seq, batchSize, func(r client.Result) {
			results[r.RequestID] = r
			if len(results) == phaseB {
				close(resultsOfA)
			}
		})
		published <- publishOutcome{results, err}
	}()

	// A is in the broker, and n3 has received and saved its part of it:
	// nothing is left above the saved position of n3's shards.
	select {
	case <-resultsOfA:
	case <-ctx.Done():
		t.Fatalf("phase A (%d messages) was not confirmed: %v", phaseB, ctx.Err())
	}
	var backlog string
	waitUntil(ctx, t, 20*time.Second, func() bool {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		info, err := clients["n1"].DescribeSubscription(callCtx, subscription)
		if err != nil {
			backlog = err.Error()
			return false
		}
		var desc []string
		ok := true
		for _, s := range info.Shards {
			desc = append(desc, fmt.Sprintf("%s:%d", s.Shard, s.Backlog))
			if n3Shards[s.Shard] && s.Backlog != 0 {
				ok = false
			}
		}
		backlog = strings.Join(desc, " ")
		return ok
	}, func() string { return "n3 saves its acks of phase A (backlog per shard: " + backlog + ")" })
	n3Saved := map[string]bool{}
	for _, d := range subs["n3"].snapshot() {
		n3Saved[string(d.Payload)] = true
	}
	t.Logf("phase A: n3 received and saved %d messages (n2 received %d) at %s",
		len(n3Saved), subs["n2"].count(), time.Since(start).Round(time.Millisecond))
	require.NotEmpty(t, n3Saved, "n3 received part of phase A")
	close(releaseB)

	// 5. Once n3 has received some of B, SIGKILL its container.
	waitUntil(ctx, t, 20*time.Second, func() bool { return subs["n3"].count() >= len(n3Saved)+n3OfB },
		func() string {
			return fmt.Sprintf("n3 receives %d messages of phase B (it has %d)", n3OfB, subs["n3"].count())
		})
	n3AtKill := subs["n3"].count()
	killAt := time.Now()
	_, err := provider.Client().ContainerKill(ctx, nodes["n3"].GetContainerID(), dockerclient.ContainerKillOptions{Signal: "SIGKILL"})
	require.NoError(t, err, "kill n3")
	// The engine answers the kill before the process is gone: wait for
	// that, so that phase C is published after n3's death.
	waitCtx, waitCancel := context.WithTimeout(ctx, 10*time.Second)
	defer waitCancel()
	exited := provider.Client().ContainerWait(waitCtx, nodes["n3"].GetContainerID(),
		dockerclient.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case res := <-exited.Result:
		require.EqualValues(t, 137, res.StatusCode, "n3's exit status (SIGKILL)")
	case err := <-exited.Error:
		t.Fatalf("waiting for n3 to stop: %v", err)
	}
	close(killed)
	t.Logf("killed n3 at %s, when it had received %d messages (n2 %d); it was gone %s later",
		killAt.Sub(start).Round(time.Millisecond), n3AtKill, subs["n2"].count(), time.Since(killAt).Round(time.Millisecond))

	// n3's stream ends with its container; what it received is final then.
	select {
	case <-subs["n3"].done:
		t.Logf("n3's stream ended %s after the kill: %v", subs["n3"].endedAt().Sub(killAt).Round(time.Millisecond), subs["n3"].error())
	case <-time.After(15 * time.Second):
		t.Fatalf("n3's stream did not end within 15s of the kill")
	}
	n3Got := subs["n3"].snapshot()
	n3Payloads := map[string]bool{}
	for _, d := range n3Got {
		n3Payloads[string(d.Payload)] = true
	}

	// 6. n2 ends up with everything n3 did not have, and n1 lists n1 and
	// n2 only.
	all := map[string]bool{}
	for _, m := range msgs {
		all[string(m.Payload)] = true
	}
	missing := func() []string {
		have := map[string]bool{}
		for _, d := range subs["n2"].snapshot() {
			have[string(d.Payload)] = true
		}
		var out []string
		for p := range all {
			if !have[p] && !n3Payloads[p] {
				out = append(out, p)
			}
		}
		return out
	}
	var membersAt time.Time // when n1 first listed two members
	var members string
	waitUntil(ctx, t, 40*time.Second, func() bool {
		if membersAt.IsZero() {
			if ok, got := membersAre(ctx, admin, names[:2]); ok {
				membersAt = time.Now()
			} else {
				members = got
			}
		}
		return !membersAt.IsZero() && len(missing()) == 0
	}, func() string {
		m := missing()
		slices.Sort(m)
		return fmt.Sprintf("every message reaches n2 or had reached n3 (%d missing, first %q; n2 stream: %v, notices %v), "+
			"and n1 lists n1 and n2 alive (it lists %s)",
			len(m), m[:min(3, len(m))], subs["n2"].error(), subs["n2"].noticeList(), members)
	})

	out := <-published
	require.NoError(t, out.err, "publish")
	require.Len(t, out.results, count, "publish results")
	for _, m := range msgs {
		r := out.results[m.RequestID]
		require.Equal(t, codes.OK, r.Code, "request %s: %s", m.RequestID, r.Error)
	}

	// Where each message sits in the broker: shard order is offset order.
	brokerAddr, err := broker.PortEndpoint(ctx, brokerPort, "")
	require.NoError(t, err)
	type position struct {
		shard  string
		offset int64
	}
	pos := map[string]position{}
	for _, rec := range consume(ctx, t, brokerAddr, topic, count) {
		pos[string(rec.Value)] = position{fmt.Sprintf("%s/%d", rec.Topic, rec.Partition), rec.Offset}
	}
	require.Len(t, pos, count, "distinct records in the broker")

	byPayload := map[string]client.Message{}
	for _, m := range msgs {
		byPayload[string(m.Payload)] = m
	}
	idOf := map[string]string{} // payload -> message id, across both streams
	n2Got := subs["n2"].snapshot()
	var covered time.Time // when n2 had received the last message n3 had not
	var firstTakeover time.Time
	dupsInN2, fromN3 := 0, 0
	for _, l := range []struct {
		name string
		got  []delivery
	}{{"n3", n3Got}, {"n2", n2Got}} {
		last := map[string]int64{}
		seen := map[string]bool{}
		for _, d := range l.got {
			p := string(d.Payload)
			want, ok := byPayload[p]
			require.True(t, ok, "%s received a message nobody published: %q", l.name, p)
			require.Equal(t, pos[p].shard, d.Shard, "%s: shard of %q", l.name, p)
			require.Equal(t, string(want.Key), string(d.Key), "%s: key of %q", l.name, p)
			if id, ok := idOf[p]; ok {
				require.Equal(t, id, d.ID, "%s: %q came again with another id", l.name, p)
			}
			idOf[p] = d.ID
			if seen[p] {
				if l.name == "n2" {
					dupsInN2++
				}
				continue // a redelivery in the same stream: at-least-once allows it
			}
			seen[p] = true
			if prev, ok := last[d.Shard]; ok {
				require.Greater(t, pos[p].offset, prev, "%s: shard %s out of order at %q", l.name, d.Shard, p)
			}
			last[d.Shard] = pos[p].offset
			if l.name == "n3" {
				require.True(t, n3Shards[d.Shard], "n3 received %q of shard %s, not one of its own", p, d.Shard)
				continue
			}
			// A move redelivers only what was not saved.
			require.False(t, n3Saved[p], "n2 received %q, which n3 had acked and saved before the kill", p)
			if n3Payloads[p] {
				fromN3++
			} else if d.At.After(covered) {
				covered = d.At
			}
			if n3Shards[d.Shard] && firstTakeover.IsZero() {
				firstTakeover = d.At
			}
		}
	}
	require.False(t, firstTakeover.Before(killAt), "n2 received a message of n3's shards before the kill")
	t.Logf("n3 received %d before the kill, %d of them saved; n2 received %d (%d of them n3 had received too, %d twice in its own stream)",
		len(n3Got), len(n3Saved), len(n2Got), fromN3, dupsInN2)
	t.Logf("after the kill: n2's first message of a shard of n3's after %s; n2 had everything n3 had not after %s; n1 listed 2 members after %s",
		firstTakeover.Sub(killAt).Round(time.Millisecond), covered.Sub(killAt).Round(time.Millisecond),
		membersAt.Sub(killAt).Round(time.Millisecond))
	t.Logf("n2's stream: %v, notices %v", subs["n2"].error(), subs["n2"].noticeList())
}

// newPinnedNetwork creates a user-defined bridge network with a subnet of
// its own, removed when t ends. Dynamic addresses (the broker's) come from
// the upper half of the subnet, so the lower half is free for pinned node
// addresses. The subnet is picked at random in 10.213.0.0/16, and picked
// again if it overlaps a network of another run.
func newPinnedNetwork(t *testing.T) (*testcontainers.DockerNetwork, netip.Prefix) {
	t.Helper()
	var lastErr error
	for range 10 {
		base := netip.AddrFrom4([4]byte{10, 213, byte(rand.IntN(256)), 0})
		subnet := netip.PrefixFrom(base, 24)
		ipam := &network.IPAM{Config: []network.IPAMConfig{{
			Subnet:  subnet,
			IPRange: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, base.As4()[2], 128}), 25),
			Gateway: base.Next(),
		}}}
		nw, err := tcnetwork.New(t.Context(), tcnetwork.WithIPAM(ipam))
		testcontainers.CleanupNetwork(t, nw)
		if err == nil {
			return nw, subnet
		}
		lastErr = err
		if !strings.Contains(err.Error(), "overlap") {
			break
		}
	}
	require.NoError(t, lastErr, "create network")
	return nil, netip.Prefix{}
}

// nodeIP is the pinned address of node i: .11, .12, ...
func nodeIP(subnet netip.Prefix, i int) netip.Addr {
	a := subnet.Addr().As4()
	a[3] = byte(11 + i)
	return netip.AddrFrom4(a)
}

// startClusterNode runs `streamgate serve` as name at ip on nw, joining
// seed's gossip (unless it is seed), secured by sec, and waits for /readyz.
func startClusterNode(t *testing.T, nw *testcontainers.DockerNetwork, name string, ip, seed netip.Addr, sec *secureCluster) *testcontainers.DockerContainer {
	t.Helper()
	args := []string{"serve",
		"--brokers", brokerAlias + ":9092",
		"--node-name", name,
		"--grpc-addr", ":50051",
		"--http-addr", ":8080",
		"--gossip-addr", ":" + gossipPort,
		"--advertise-addr", ip.String(),
		// Save acked positions every second (default 5s), so that n3 has
		// saved part of what it acked when it is killed.
		"--commit-interval", "1s",
		// The test closes its subscribers before the containers stop.
		"--drain-timeout", "2s",
	}
	if ip != seed {
		args = append(args, "--join", seed.String()+":"+gossipPort)
	}
	secArgs, secFiles := sec.nodeOptions(name)
	args = append(args, secArgs...)
	return run(t, "serve "+name,
		testcontainers.WithCmd(args...),
		secFiles,
		testcontainers.WithExposedPorts(grpcPort, httpPort),
		tcnetwork.WithNetwork([]string{name}, nw),
		testcontainers.WithEndpointSettingsModifier(func(s map[string]*network.EndpointSettings) {
			if es, ok := s[nw.Name]; ok {
				es.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: ip}
			}
		}),
		testcontainers.WithWaitStrategy(wait.ForHTTP("/readyz").WithPort(httpPort).WithStartupTimeout(startupTimeout)),
	)
}

// waitUntil polls cond until it holds, failing t with what() when within
// passes or ctx ends first.
func waitUntil(ctx context.Context, t *testing.T, within time.Duration, cond func() bool, what func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting until %s", within, what())
		case <-tick.C:
		}
	}
}

// waitMembers waits until c's node lists exactly want, all alive.
func waitMembers(ctx context.Context, t *testing.T, c *client.Client, want []string, within time.Duration) {
	t.Helper()
	var last string
	waitUntil(ctx, t, within, func() bool {
		ok, got := membersAre(ctx, c, want)
		last = got
		return ok
	}, func() string { return fmt.Sprintf("the members are %v, alive (they are: %s)", want, last) })
}

// membersAre tells whether c's node lists exactly want, all alive, and
// what it lists.
func membersAre(ctx context.Context, c *client.Client, want []string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, members, err := c.Members(ctx)
	if err != nil {
		return false, err.Error()
	}
	var got []string
	ok := len(members) == len(want)
	for _, m := range members {
		got = append(got, m.Name+"="+m.State)
		if m.State != "alive" || !slices.Contains(want, m.Name) {
			ok = false
		}
	}
	slices.Sort(got)
	return ok, strings.Join(got, " ")
}

// waitAssignment waits until every shard of the subscription, as c's node
// describes it, has an owner and is claimed by the owner's node, with the
// shards split evenly between two nodes; it returns shard -> node.
func waitAssignment(ctx context.Context, t *testing.T, c *client.Client, name string, shards int, within time.Duration) map[string]string {
	t.Helper()
	var owners map[string]string
	var last string
	waitUntil(ctx, t, within, func() bool {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		info, err := c.DescribeSubscription(callCtx, name)
		if err != nil {
			last = err.Error()
			return false
		}
		owners = map[string]string{}
		perNode := map[string]int{}
		var desc []string
		for _, s := range info.Shards {
			desc = append(desc, fmt.Sprintf("%s:%s/%s", s.Shard, s.Node, s.ClaimedBy))
			if s.Node == "" || s.ClaimedBy != s.Node {
				continue
			}
			owners[s.Shard] = s.Node
			perNode[s.Node]++
		}
		last = strings.Join(desc, " ")
		return len(info.Subscribers) == 2 && len(owners) == shards && len(perNode) == 2 &&
			perNode["n2"] == shards/2 && perNode["n3"] == shards/2
	}, func() string {
		return fmt.Sprintf("n2 and n3 each own and read half the shards (shard:owner/reader: %s)", last)
	})
	return owners
}

// delivery is one message a subscriber received, and when.
type delivery struct {
	client.Received
	At time.Time
}

// streamLog reads one subscriber's stream, acks every message at once, and
// keeps what came.
type streamLog struct {
	name string
	done chan struct{} // closed when the stream has ended

	mu      sync.Mutex
	got     []delivery
	notices []string
	err     error
	ended   time.Time
}

func (l *streamLog) run(s *client.Subscriber) {
	defer close(l.done)
	for {
		batch, notice, err := s.Recv()
		now := time.Now()
		l.mu.Lock()
		switch {
		case err != nil:
			l.err, l.ended = err, now
		case notice != nil:
			l.notices = append(l.notices, notice.String())
		default:
			for _, m := range batch {
				l.got = append(l.got, delivery{m, now})
			}
		}
		l.mu.Unlock()
		if err != nil {
			return
		}
		if len(batch) > 0 {
			ids := make([]string, len(batch))
			for i, m := range batch {
				ids[i] = m.ID
			}
			// A failed send means the stream is gone: Recv says why.
			_ = s.Ack(ids...)
		}
	}
}

func (l *streamLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.got)
}

func (l *streamLog) snapshot() []delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

func (l *streamLog) error() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *streamLog) endedAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ended
}

func (l *streamLog) noticeList() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.notices)
}
