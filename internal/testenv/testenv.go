// Package testenv starts an in-process streamgate node against an
// in-process kfake broker, for integration tests.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/cluster"
	"github.com/streamgate/streamgate/internal/devbroker"
	"github.com/streamgate/streamgate/node"
)

// Options shape an Env; zero values take defaults.
type Options struct {
	Topics     []string // created at start
	Partitions int      // per topic; default 8
	// Node and Kafka, when set, adjust the configurations before start.
	Node  func(*node.Config)
	Kafka func(*kafka.Config)
	// WrapBackend, when set, wraps the backend the node uses (to observe it).
	WrapBackend func(node.Backend) node.Backend
	// Cluster, when set, is used instead of a new broker (a second node,
	// or a node restarted against the same data).
	Cluster *kfake.Cluster
	// Gossip makes the node a member of a gossip cluster (on 127.0.0.1,
	// any port), joining the members at Join.
	Gossip bool
	Join   []string
	// GossipConfig, when set, adjusts the member's configuration.
	GossipConfig func(*cluster.Config)
	// Proxied puts a TCP proxy between every client and the broker
	// (Env.Proxy), so a test can make the broker unreachable.
	Proxied bool
	// NodeName names the node (default "test-node").
	NodeName string
	// NodeOptions, when set, adjusts the node's options (TLS credentials,
	// for one) before start.
	NodeOptions func(*node.Options)
	// DialOptions are added to Env.Client's (TLS credentials, for one).
	DialOptions []grpc.DialOption
	// Backend, when set, is the node's backend instead of a Kafka one on a
	// kfake broker (for another backend's tests): no broker is started,
	// Env.Backend stays nil and Env's Kafka helpers do not apply. Stop
	// calls its Close and Kill its Abort, where it has them.
	Backend node.Backend
}

// Env is a running broker, backend, node and client.
type Env struct {
	Cluster  *kfake.Cluster
	Brokers  []string
	Backend  *kafka.Broker
	Server   *node.Server
	Addr     string // the node's gRPC address
	Client   *client.Client
	Registry *prometheus.Registry
	Gossip   *cluster.Cluster // when Options.Gossip
	Proxy    *Proxy           // when Options.Proxied
	cutter   *cutter          // when Options.Gossip
	producer *kgo.Client
	admin    *kadm.Client // for Committed; used from the test goroutine only
	other    node.Backend // Options.Backend
	stop     func()
	stopOnce sync.Once
	owner    testing.TB // the test that started the env, which owns its clients
}

// testLogger prints the node's logs when STREAMGATE_TEST_LOG is set (to a
// level: debug, info, warn), and discards them otherwise.
func testLogger(name string) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv("STREAMGATE_TEST_LOG"))); err != nil || os.Getenv("STREAMGATE_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("node", name)
}

// Stop shuts the node down (streams end, positions are saved); the broker
// keeps running.
func (e *Env) Stop() { e.stopOnce.Do(e.stop) }

// Kill stops the node as a crash would: no drain, no saves.
func (e *Env) Kill() {
	e.stopOnce.Do(func() {
		if e.Gossip != nil {
			e.Gossip.Kill()
		}
		switch b := e.other.(type) {
		case nil:
			e.Backend.Abort()
		case interface{ Abort() }:
			b.Abort()
		}
		e.Server.Kill()
	})
}

// Start starts everything and stops it when the test ends.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	if o.Partitions == 0 {
		o.Partitions = 8
	}
	var proxy *Proxy
	broker := o.Cluster
	if broker == nil && o.Backend == nil {
		opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(o.Partitions)}
		if o.Proxied {
			opts = append(opts, kfake.ListenFn(proxiedListen(t, &proxy)))
		}
		if len(o.Topics) > 0 {
			opts = append(opts, kfake.SeedTopics(int32(o.Partitions), o.Topics...))
		}
		var err error
		if broker, err = kfake.NewCluster(opts...); err != nil {
			t.Fatalf("kfake: %v", err)
		}
		t.Cleanup(broker.Close)
	}
	var err error
	e := &Env{owner: t, Proxy: proxy, Cluster: broker, Registry: prometheus.NewRegistry(), other: o.Backend}
	log := testLogger(o.NodeName)
	if broker != nil {
		e.Brokers = broker.ListenAddrs()
	}
	if o.Backend == nil {
		kcfg := kafka.DefaultConfig(e.Brokers...)
		kcfg.Logger = log
		kcfg.Registerer = e.Registry
		if o.Kafka != nil {
			o.Kafka(&kcfg)
		}
		e.Backend, err = kafka.New(kcfg)
		if err != nil {
			t.Fatalf("kafka backend: %v", err)
		}
	}

	ncfg := node.DefaultConfig()
	ncfg.NodeName = "test-node"
	if o.NodeName != "" {
		ncfg.NodeName = o.NodeName
	}
	if o.Node != nil {
		o.Node(&ncfg)
	}
	var backend node.Backend = e.Backend
	if o.Backend != nil {
		backend = o.Backend
	}
	if o.WrapBackend != nil {
		backend = o.WrapBackend(backend)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.Addr = lis.Addr().String()
	var members node.Membership
	if o.Gossip {
		ccfg := cluster.DefaultConfig()
		ccfg.Logger = log
		ccfg.NodeName = ncfg.NodeName
		ccfg.BindAddr, ccfg.BindPort = "127.0.0.1", 0
		ccfg.GRPCAddr = e.Addr
		ccfg.Join = o.Join
		ccfg.WrapTransport = func(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
			e.cutter = &cutter{NodeAwareTransport: t, cut: map[string]bool{}}
			return e.cutter
		}
		if o.GossipConfig != nil {
			o.GossipConfig(&ccfg)
		}
		if e.Gossip, err = cluster.Start(ccfg); err != nil {
			t.Fatalf("cluster: %v", err)
		}
		members = e.Gossip
	}
	nopts := node.Options{Registry: e.Registry, Cluster: members, Logger: log}
	if o.NodeOptions != nil {
		o.NodeOptions(&nopts)
	}
	e.Server, err = node.NewServer(ncfg, backend, nopts)
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- e.Server.Serve(lis, nil) }()
	e.stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Server.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		switch b := e.other.(type) {
		case nil:
			e.Backend.Close()
		case interface{ Close() }:
			b.Close()
		}
	}
	t.Cleanup(e.Stop)
	e.Client, err = client.Dial(e.Addr, o.DialOptions...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Client.Close() })
	return e
}

// Consumer returns a franz-go client that reads topics from the start, to
// check what landed in the broker.
func (e *Env) Consumer(t testing.TB, topics ...string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.Brokers...),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// ReadAll reads records until n have arrived or the deadline passes.
func ReadAll(t testing.TB, cl *kgo.Client, n int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records before the deadline", len(recs), n)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("fetch %s/%d: %v", topic, p, err)
		})
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// Produce writes records straight to the broker (not through streamgate)
// and fails the test on error.
func (e *Env) Produce(t testing.TB, recs ...*kgo.Record) {
	t.Helper()
	if e.producer == nil {
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		e.owner.Cleanup(cl.Close)
		e.producer = cl
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// Committed returns the committed offsets of a subscription's group, by
// topic and partition (absent: none).
func (e *Env) Committed(t testing.TB, subscription string) map[string]map[int32]int64 {
	t.Helper()
	out := map[string]map[int32]int64{}
	for topic, ps := range e.Saved(t, subscription) {
		out[topic] = map[int32]int64{}
		for p, pos := range ps {
			out[topic][p] = pos.Offset
		}
	}
	return out
}

// Saved returns a subscription's saved positions, by topic and partition
// (absent: none), as the Kafka backend wrote them.
func (e *Env) Saved(t testing.TB, subscription string) map[string]map[int32]kafka.SavedPosition {
	t.Helper()
	if e.admin == nil {
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...))
		if err != nil {
			t.Fatal(err)
		}
		e.owner.Cleanup(cl.Close)
		e.admin = kadm.NewClient(cl)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.admin.FetchOffsets(ctx, kafka.DefaultConfig().GroupPrefix+subscription)
	out := map[string]map[int32]kafka.SavedPosition{}
	if err != nil {
		if errors.Is(err, kerr.GroupIDNotFound) {
			return out
		}
		t.Fatalf("fetch offsets: %v", err)
	}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil || o.At < 0 {
			return
		}
		p, err := kafka.ParseSavedPosition(o.At, o.Metadata)
		if err != nil {
			t.Fatalf("saved position of %s/%d: %v", o.Topic, o.Partition, err)
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]kafka.SavedPosition{}
		}
		out[o.Topic][o.Partition] = p
	})
	return out
}

// CreateTopic creates a topic with the given shard count.
func (e *Env) CreateTopic(t testing.TB, topic string, partitions int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, int32(partitions), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %q: %v", topic, err)
	}
}

// DeleteTopic deletes a topic.
func (e *Env) DeleteTopic(t testing.TB, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).DeleteTopic(ctx, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("delete topic %q: %v", topic, err)
	}
}

// ResetProducer makes Produce use a new client, for a topic created again
// (a client keeps the old topic's id).
func (e *Env) ResetProducer() {
	if e.producer != nil {
		e.producer.Close()
		e.producer = nil
	}
}

// StartCluster starts n nodes on one broker, each a member of one gossip
// cluster (node-1 .. node-n), and waits until every node sees all of them.
func StartCluster(t testing.TB, n int, o Options) []*Env {
	t.Helper()
	var envs []*Env
	for i := range n {
		oi := o
		oi.Gossip = true
		oi.NodeName = fmt.Sprintf("node-%d", i+1)
		if i > 0 {
			oi.Cluster = envs[0].Cluster
			oi.Join = []string{envs[0].Gossip.LocalAddr()}
		}
		envs = append(envs, Start(t, oi))
	}
	WaitConverged(t, envs...)
	return envs
}

// WaitConverged waits until every env's view lists every env's node.
func WaitConverged(t testing.TB, envs ...*Env) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok := true
		for _, e := range envs {
			v := e.Gossip.View()
			if len(v.Nodes) != len(envs) || len(v.Unsynced) > 0 {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster of %d did not converge", len(envs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxiedListen makes kfake listen on a port of its own and advertise a
// proxy in front of it, so that every client goes through the proxy.
func proxiedListen(t testing.TB, proxy **Proxy) func(string, string) (net.Listener, error) {
	return func(network, _ string) (net.Listener, error) {
		ln, err := net.Listen(network, "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		*proxy = newProxy(t, ln.Addr().String())
		return devbroker.Advertise(ln, (*proxy).Addr), nil
	}
}
