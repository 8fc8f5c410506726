package cluster

// Integration tests: real memberlist nodes in this process on 127.0.0.1.
// Set STREAMGATE_CLUSTER_LOG=1 to see their logs, STREAMGATE_CLUSTER_KILL_RUNS
// to measure more kills, and STREAMGATE_CLUSTER_LOAD=30s to count false
// suspicions with the CPUs loaded.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/streamgate/streamgate/internal/leaktest"
)

// countingHandler counts memberlist's failure-detection log lines and,
// with STREAMGATE_CLUSTER_LOG set, prints every record.
type countingHandler struct {
	print    slog.Handler // nil: print nothing
	suspects *atomic.Int64
	failed   *atomic.Int64
}

func (h countingHandler) Enabled(ctx context.Context, l slog.Level) bool { return true }
func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	switch {
	case strings.HasPrefix(r.Message, "Suspect "):
		h.suspects.Add(1)
	case strings.HasPrefix(r.Message, "Marking ") && strings.Contains(r.Message, " as failed"):
		h.failed.Add(1)
	}
	if h.print != nil && h.print.Enabled(ctx, r.Level) {
		return h.print.Handle(ctx, r)
	}
	return nil
}
func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if h.print != nil {
		h.print = h.print.WithAttrs(as)
	}
	return h
}
func (h countingHandler) WithGroup(g string) slog.Handler {
	if h.print != nil {
		h.print = h.print.WithGroup(g)
	}
	return h
}

var logCounts struct{ suspects, failed atomic.Int64 }

func testLogger() *slog.Logger {
	h := countingHandler{suspects: &logCounts.suspects, failed: &logCounts.failed}
	if os.Getenv("STREAMGATE_CLUSTER_LOG") != "" {
		h.print = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	return slog.New(h)
}

func testConfig(name string) Config {
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.GRPCAddr = name + ":50051"
	cfg.JoinRetryInterval = 100 * time.Millisecond
	cfg.Logger = testLogger()
	tune(&cfg, os.Getenv("STREAMGATE_CLUSTER_TUNING"))
	return cfg
}

// tune overrides the failure-detection defaults from a spec such as
// "probe=400ms,timeout=200ms,suspicion=3,max=2", to measure other tunings.
func tune(cfg *Config, spec string) {
	for kv := range strings.SplitSeq(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		d, _ := time.ParseDuration(v)
		n, _ := strconv.Atoi(v)
		switch k {
		case "probe":
			cfg.ProbeInterval = d
		case "timeout":
			cfg.ProbeTimeout = d
		case "suspicion":
			cfg.SuspicionMult = n
		case "max":
			cfg.SuspicionMaxTimeoutMult = n
		}
	}
}

// node is a started Cluster with its own metrics registry.
type node struct {
	*Cluster
	reg *prometheus.Registry
}

func startNode(t *testing.T, cfg Config) node {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	c, err := Start(cfg)
	require.NoError(t, err)
	t.Cleanup(c.Kill)
	return node{Cluster: c, reg: reg}
}

func (n node) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() != labels[i+1] {
						continue metric
					}
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// cluster3 starts three nodes, b and c joining a, and waits until each
// has every node's state.
func cluster3(t *testing.T, prefix string) []node {
	t.Helper()
	a := startNode(t, testConfig(prefix+"-a"))
	nodes := []node{a}
	for _, s := range []string{"b", "c"} {
		cfg := testConfig(prefix + "-" + s)
		cfg.Join = []string{a.LocalAddr()}
		nodes = append(nodes, startNode(t, cfg))
	}
	waitFor(t, 10*time.Second, "three nodes converge", func() bool { return allSee(nodes, names(nodes)...) })
	return nodes
}

func names(nodes []node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.cfg.NodeName)
	}
	return out
}

// allSee reports whether every node's View holds exactly the named nodes,
// with their gRPC addresses, and nothing is unsynced.
func allSee(nodes []node, want ...string) bool {
	for _, n := range nodes {
		v := n.View()
		if len(v.Nodes) != len(want) || len(v.Unsynced) != 0 {
			return false
		}
		for _, w := range want {
			if v.Nodes[w].GRPCAddr != w+":50051" {
				return false
			}
		}
	}
	return true
}

// waitFor polls cond until it holds and returns how long that took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// forgotten reports whether no internal map of c mentions name.
func forgotten(c *Cluster, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, m := c.t.members[name]
	_, s := c.t.states[name]
	_, o := c.t.owed[name]
	return !m && !s && !o
}

func memberNames(c *Cluster) []string {
	var out []string
	for _, m := range c.Members() {
		out = append(out, m.Name)
	}
	return out
}

func subsOf(node string) map[string]SubscriptionState {
	return map[string]SubscriptionState{"orders": {
		Subscribers: []SubscriberInfo{{ID: node + "/sub-1", Topics: []string{"orders", "refunds"}, OpenedAt: time.Unix(1700000000, 0).UTC()}},
		Claims:      []string{"orders/0", "orders/1"},
	}}
}

func TestThreeNodesConverge(t *testing.T) {
	start := time.Now()
	nodes := cluster3(t, "conv")
	joined := time.Since(start)

	for _, n := range nodes {
		n.SetLocal(subsOf(n.cfg.NodeName))
	}
	spread := waitFor(t, 5*time.Second, "subscriptions spread", func() bool {
		for _, n := range nodes {
			v := n.View()
			for _, o := range nodes {
				name := o.cfg.NodeName
				if !assert.ObjectsAreEqual(subsOf(name), v.Nodes[name].Subscriptions) {
					return false
				}
			}
		}
		return true
	})

	// One more change in a settled cluster: how long an update takes.
	a := nodes[0]
	update := map[string]SubscriptionState{"orders": {Claims: []string{"orders/7"}}}
	a.SetLocal(update)
	a.SetDraining(true)
	one := waitFor(t, 5*time.Second, "an update spreads", func() bool {
		for _, n := range nodes[1:] {
			st := n.View().Nodes[a.cfg.NodeName]
			if !st.Draining || !slices.Equal(st.Subscriptions["orders"].Claims, []string{"orders/7"}) {
				return false
			}
		}
		return true
	})
	t.Logf("MEASURED start of 3 nodes to converged views: %v; SetLocal on all three to all views: %v; one more update: %v",
		joined, spread, one)

	for _, n := range nodes {
		members := n.Members()
		require.Len(t, members, 3)
		for _, m := range members {
			assert.Equal(t, StateAlive, m.State)
			assert.Equal(t, m.Name+":50051", m.GRPCAddr)
			assert.NotEmpty(t, m.Addr)
		}
		assert.Equal(t, 3.0, n.counter(t, "streamgate_cluster_members"))
		assert.Positive(t, n.counter(t, "streamgate_cluster_state_updates_total"))
	}
}

func TestPushPullRepairsMissedSends(t *testing.T) {
	nodes := cluster3(t, "ae")
	a, b, c := nodes[0], nodes[1], nodes[2]
	toC := func(member string) bool { return member == "ae-c" }
	a.dropSends.Store(&toC)

	a.SetLocal(subsOf("ae-a"))
	direct := waitFor(t, 5*time.Second, "b gets a's state directly", func() bool {
		return len(b.View().Nodes["ae-a"].Subscriptions) == 1
	})
	repaired := waitFor(t, 10*time.Second, "c gets a's state by push/pull", func() bool {
		return len(c.View().Nodes["ae-a"].Subscriptions) == 1
	})
	t.Logf("MEASURED a lost send repaired by push/pull after %v more (direct: %v; PushPullInterval %v)", repaired, direct, a.cfg.PushPullInterval)
	assert.Positive(t, a.counter(t, "streamgate_cluster_state_send_failures_total"))
}

func TestChangesSignalsWithoutBlocking(t *testing.T) {
	a := startNode(t, testConfig("sig-a"))
	for range 100 { // nobody reads: must not block
		a.SetLocal(subsOf("x"))
	}
	select {
	case <-a.Changes():
	default:
		t.Fatal("no change signalled")
	}
	select {
	case <-a.Changes():
		t.Fatal("signals are not coalesced")
	default:
	}
}

func TestLeaveDropsStateAtOnce(t *testing.T) {
	nodes := cluster3(t, "leave")
	a, b, c := nodes[0], nodes[1], nodes[2]
	c.SetLocal(subsOf(c.cfg.NodeName))
	waitFor(t, 5*time.Second, "c's claims spread", func() bool {
		return len(a.View().Nodes["leave-c"].Subscriptions) == 1 && len(b.View().Nodes["leave-c"].Subscriptions) == 1
	})

	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- c.Leave(2 * time.Second) }()
	dropped := waitFor(t, 5*time.Second, "others drop c's state", func() bool {
		_, inA := a.View().Nodes["leave-c"]
		_, inB := b.View().Nodes["leave-c"]
		return !inA && !inB
	})
	gone := waitFor(t, 5*time.Second, "c is no member and no trace of it remains", func() bool {
		return !slices.Contains(memberNames(a.Cluster), "leave-c") && !slices.Contains(memberNames(b.Cluster), "leave-c") &&
			forgotten(a.Cluster, "leave-c") && forgotten(b.Cluster, "leave-c")
	})
	require.NoError(t, <-errc)
	t.Logf("MEASURED graceful leave: state dropped by both others after %v, member gone after %v; Leave returned after %v",
		dropped, gone, time.Since(start))
	for _, n := range []node{a, b} {
		assert.Equal(t, 1.0, n.counter(t, "streamgate_cluster_departures_total", "reason", "left"))
		assert.Equal(t, 0.0, n.counter(t, "streamgate_cluster_departures_total", "reason", "dead"))
	}
	assert.True(t, allSee([]node{a, b}, "leave-a", "leave-b"))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestKilledNodeIsDroppedWithinBound(t *testing.T) {
	runs := envInt("STREAMGATE_CLUSTER_KILL_RUNS", 2)
	a := startNode(t, testConfig("kill-a"))
	cfg := testConfig("kill-b")
	cfg.Join = []string{a.LocalAddr()}
	b := startNode(t, cfg)
	survivors := []node{a, b}

	var times []time.Duration
	for i := range runs {
		name := fmt.Sprintf("kill-victim-%d", i)
		cfg := testConfig(name)
		cfg.Join = []string{a.LocalAddr()}
		victim := startNode(t, cfg)
		victim.SetLocal(subsOf(name))
		waitFor(t, 10*time.Second, "victim's state spreads", func() bool {
			return len(a.View().Nodes[name].Subscriptions) == 1 && len(b.View().Nodes[name].Subscriptions) == 1
		})

		start := time.Now()
		victim.Kill()
		d := waitFor(t, 15*time.Second, "survivors drop the victim", func() bool {
			return forgotten(a.Cluster, name) && forgotten(b.Cluster, name)
		})
		times = append(times, d)
		require.True(t, allSee(survivors, "kill-a", "kill-b"), "the survivors keep each other")
		t.Logf("run %d: killed node dropped by both survivors after %v", i, time.Since(start))
	}
	slices.Sort(times)
	t.Logf("MEASURED kill detection over %d runs: min %v, median %v, max %v (goal < 3s)", runs, times[0], times[len(times)/2], times[len(times)-1])
	assert.Less(t, times[len(times)/2], 3*time.Second, "median detection time")
	for _, n := range survivors {
		assert.Equal(t, float64(runs), n.counter(t, "streamgate_cluster_departures_total", "reason", "dead"))
		assert.Equal(t, 0.0, n.counter(t, "streamgate_cluster_departures_total", "reason", "left"))
	}
}

// TestFalseSuspicionsUnderLoad is the price of fast detection: with the
// CPUs busy, how often do healthy nodes get suspected or declared dead?
// It runs only with STREAMGATE_CLUSTER_LOAD set to a duration.
func TestFalseSuspicionsUnderLoad(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("STREAMGATE_CLUSTER_LOAD"))
	if err != nil {
		t.Skip("set STREAMGATE_CLUSTER_LOAD=30s to run")
	}
	nodes := cluster3(t, "load")
	for _, n := range nodes {
		n.SetLocal(subsOf(n.cfg.NodeName))
	}
	spinners := envInt("STREAMGATE_CLUSTER_SPINNERS", 16)
	suspects0, failed0 := logCounts.suspects.Load(), logCounts.failed.Load()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range spinners {
		wg.Go(func() {
			x := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := range 100000 {
					x += i
				}
			}
		})
	}
	incomplete := 0
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // sampling, not synchronisation
		if !allSee(nodes, names(nodes)...) {
			incomplete++
		}
	}
	close(stop)
	wg.Wait()

	var suspicions, deaths, refuted float64
	for _, n := range nodes {
		suspicions += n.counter(t, "streamgate_cluster_suspicions_total")
		deaths += n.counter(t, "streamgate_cluster_departures_total", "reason", "dead")
		refuted += n.counter(t, "streamgate_cluster_refutations_total")
	}
	t.Logf("tuning: probe %v, timeout %v, suspicion mult %d, max mult %d", nodes[0].cfg.ProbeInterval, nodes[0].cfg.ProbeTimeout, nodes[0].cfg.SuspicionMult, nodes[0].cfg.SuspicionMaxTimeoutMult)
	t.Logf("MEASURED under load (%d spinning goroutines, GOMAXPROCS %d, %v, 3 nodes): %d suspicions raised by probes (%v counted), "+
		"%d false death declarations, %v departures observed, %v refutations by the accused; %d of %d samples with an incomplete view",
		spinners, runtime.GOMAXPROCS(0), d, logCounts.suspects.Load()-suspects0, suspicions,
		logCounts.failed.Load()-failed0, deaths, refuted, incomplete, int(d/(100*time.Millisecond)))
	waitFor(t, 10*time.Second, "views complete after the load", func() bool { return allSee(nodes, names(nodes)...) })
}

func TestEncryptionKeepsOutOtherKeys(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	cfg := testConfig("enc-a")
	cfg.SecretKey = key
	a := startNode(t, cfg)
	cfg = testConfig("enc-b")
	cfg.SecretKey = key
	cfg.Join = []string{a.LocalAddr()}
	b := startNode(t, cfg)
	waitFor(t, 5*time.Second, "same key forms a cluster", func() bool { return allSee([]node{a, b}, "enc-a", "enc-b") })

	cfg = testConfig("enc-intruder")
	cfg.SecretKey = []byte("fedcba9876543210")
	cfg.Join = []string{a.LocalAddr(), b.LocalAddr()}
	x := startNode(t, cfg)
	waitFor(t, 5*time.Second, "the intruder's joins keep failing", func() bool {
		return x.counter(t, "streamgate_cluster_join_failures_total") >= 5
	})
	for _, n := range []node{a, b} {
		assert.NotContains(t, memberNames(n.Cluster), "enc-intruder")
		assert.NotContains(t, n.View().Nodes, "enc-intruder")
	}
	assert.Equal(t, []string{"enc-intruder"}, memberNames(x.Cluster))

	cfg = testConfig("enc-plain")
	cfg.Join = []string{a.LocalAddr()}
	p := startNode(t, cfg)
	waitFor(t, 5*time.Second, "an unencrypted node's joins keep failing", func() bool {
		return p.counter(t, "streamgate_cluster_join_failures_total") >= 3
	})
	assert.Equal(t, []string{"enc-a", "enc-b"}, memberNames(a.Cluster))
}

func TestJoinByHostName(t *testing.T) {
	a := startNode(t, testConfig("host-a"))
	_, port, err := net.SplitHostPort(a.LocalAddr())
	require.NoError(t, err)
	cfg := testConfig("host-b")
	cfg.Join = []string{"localhost:" + port}
	b := startNode(t, cfg)
	d := waitFor(t, 5*time.Second, "join through localhost", func() bool { return allSee([]node{a, b}, "host-a", "host-b") })
	t.Logf("joined through a host name seed in %v", d)
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func TestJoinRetriedUntilSeedComesUp(t *testing.T) {
	port := freePort(t)
	cfg := testConfig("retry-b")
	cfg.Join = []string{"127.0.0.1:" + strconv.Itoa(port)}
	b := startNode(t, cfg)
	waitFor(t, 5*time.Second, "b fails to join twice", func() bool {
		return b.counter(t, "streamgate_cluster_join_failures_total") >= 2
	})

	cfg = testConfig("retry-a")
	cfg.BindPort = port
	a := startNode(t, cfg)
	d := waitFor(t, 5*time.Second, "b joins the late seed", func() bool { return allSee([]node{a, b}, "retry-a", "retry-b") })
	t.Logf("joined %v after the seed came up", d)
}

func TestNoGoroutinesLeftAfterLeaveAndKill(t *testing.T) {
	before := goleak.IgnoreCurrent()
	a, err := Start(testConfig("leak-a"))
	require.NoError(t, err)
	cfg := testConfig("leak-b")
	cfg.Join = []string{a.LocalAddr()}
	b, err := Start(cfg)
	require.NoError(t, err)
	waitFor(t, 5*time.Second, "two nodes converge", func() bool {
		return len(a.View().Nodes) == 2 && len(b.View().Nodes) == 2
	})
	a.SetLocal(subsOf("leak-a"))
	b.SetLocal(subsOf("leak-b"))
	require.NoError(t, b.Leave(time.Second))
	a.Kill()
	a.Kill() // idempotent
	require.NoError(t, b.Leave(time.Second))
	b.SetLocal(nil) // no-op after stop
	require.NoError(t, leaktest.Eventually(leaktest.Patience, before))
}
