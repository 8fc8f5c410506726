package soak

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fleet is an in-process kfake broker (so that tests can inject broker
// faults) and streamgate nodes running as processes of the built binary
// (so that tests can kill, drain and freeze them for real).
type fleet struct {
	t       *testing.T
	kf      *kfake.Cluster
	brokers string
	dir     string
	admin   *kadm.Client
	extra   []string // flags every node gets

	mu    sync.Mutex // guards nodes' process state
	nodes []*proc
}

// proc is one node process; its addresses survive restarts.
type proc struct {
	name                       string
	grpc, http, gossip, joinTo string
	cmd                        *exec.Cmd
	exited                     chan struct{}
	frozen                     bool
	starts                     int
}

func newFleet(t *testing.T, partitions int32, topics []string, extra ...string) *fleet {
	t.Helper()
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		return net.Listen(network, "127.0.0.1:0")
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(kf.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	dir := t.TempDir()
	if keep := os.Getenv("STREAMGATE_SOAK_LOGS"); keep != "" {
		dir = keep // the nodes' logs outlive the test there
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := &fleet{t: t, kf: kf, brokers: strings.Join(kf.ListenAddrs(), ","), dir: dir, admin: kadm.NewClient(cl), extra: extra}
	t.Cleanup(f.stopAll)
	return f
}

// freeAddr reserves a loopback port for a while; the node binds it next.
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		// memberlist binds TCP and UDP on one port: find one free for both.
		for range 20 {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			u, err := net.ListenPacket("udp", addr)
			l.Close()
			if err == nil {
				u.Close()
				return addr
			}
		}
		t.Fatal("no free TCP+UDP port")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// add starts n nodes, each with every node as a seed (so that a node
// restarted finds the others), and waits until they are ready.
func (f *fleet) add(n int) {
	f.t.Helper()
	f.mu.Lock()
	var seeds []string
	for i := range n {
		p := &proc{
			name:   fmt.Sprintf("node-%d", i+1),
			grpc:   freeAddr(f.t, "tcp"),
			http:   freeAddr(f.t, "tcp"),
			gossip: freeAddr(f.t, "udp"),
		}
		seeds = append(seeds, p.gossip)
		f.nodes = append(f.nodes, p)
	}
	for _, p := range f.nodes {
		p.joinTo = strings.Join(seeds, ",")
	}
	f.mu.Unlock()
	for _, p := range f.nodes {
		f.start(p)
	}
	for _, p := range f.nodes {
		f.waitReady(p, 30*time.Second)
	}
}

func (f *fleet) start(p *proc) {
	f.t.Helper()
	args := append([]string{"serve",
		"--brokers", f.brokers,
		"--node-name", p.name,
		"--grpc-addr", p.grpc,
		"--http-addr", p.http,
		"--gossip-addr", p.gossip,
		"--join", p.joinTo,
		"--log-format", "json",
	}, f.extra...)
	logf, err := os.OpenFile(filepath.Join(f.dir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		f.t.Fatal(err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A node outlives no test process, even one killed without cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		f.t.Fatalf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	f.mu.Lock()
	p.cmd, p.exited, p.frozen = cmd, exited, false
	p.starts++
	f.mu.Unlock()
}

// waitReady waits for the node's /readyz.
func (f *fleet) waitReady(p *proc, timeout time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + p.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s not ready after %s; its log:\n%s", p.name, timeout, f.logTail(p, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fleet) logTail(p *proc, lines int) string {
	b, _ := os.ReadFile(filepath.Join(f.dir, p.name+".log"))
	ls := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return string(bytes.Join(ls, []byte("\n")))
}

func (f *fleet) signal(p *proc, sig syscall.Signal) {
	f.mu.Lock()
	cmd := p.cmd
	f.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(sig)
	}
}

// kill stops p as a crash does.
func (f *fleet) kill(p *proc) {
	f.signal(p, syscall.SIGKILL)
	<-p.exited
}

// drain stops p with SIGTERM, waiting for it to exit.
func (f *fleet) drain(p *proc, timeout time.Duration) {
	f.signal(p, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		f.t.Logf("%s did not exit within %s of SIGTERM; killing it", p.name, timeout)
		f.kill(p)
	}
}

// freeze stops p's every thread (SIGSTOP) until thaw.
func (f *fleet) freeze(p *proc) {
	f.signal(p, syscall.SIGSTOP)
	f.mu.Lock()
	p.frozen = true
	f.mu.Unlock()
}

func (f *fleet) thaw(p *proc) {
	f.signal(p, syscall.SIGCONT)
	f.mu.Lock()
	p.frozen = false
	f.mu.Unlock()
}

func (f *fleet) stopAll() {
	for _, p := range f.nodes {
		if p.cmd == nil {
			continue
		}
		select {
		case <-p.exited:
		default:
			f.kill(p)
		}
	}
	if f.t.Failed() {
		for _, p := range f.nodes {
			f.t.Logf("last lines of %s's log:\n%s", p.name, f.logTail(p, 30))
		}
	}
}

// saved reads a subscription's saved positions: partition -> offset.
func (f *fleet) saved(ctx context.Context, group string) (map[int32]kadm.OffsetResponse, error) {
	resp, err := f.admin.FetchOffsets(ctx, group)
	if err != nil {
		return nil, err
	}
	out := map[int32]kadm.OffsetResponse{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At >= 0 {
			out[o.Partition] = o
		}
	})
	return out, nil
}

// ends reads the end offset of each partition of topic.
func (f *fleet) ends(ctx context.Context, topic string) (map[int32]int64, error) {
	listed, err := f.admin.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[o.Partition] = o.Offset
		}
	})
	return out, nil
}
