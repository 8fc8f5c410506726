package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/streamgate/streamgate/internal/bench"
)

// localProcs are the devbroker and gateway bench started, stopped by stop.
type localProcs struct {
	procs []*child
}

// child is one started process and its captured output.
type child struct {
	name   string
	cmd    *exec.Cmd
	out    *bytes.Buffer // bounded by tailWriter
	exited chan struct{}
	err    error // after exited closes
	mu     sync.Mutex
	// stopping is set before stop signals it: an exit after that is expected.
	stopping bool
}

// startLocal starts what the suite lacks: a devbroker when neither --addr
// nor --brokers is given, and a gateway when --addr is not; each is this
// same binary in a process of its own, on free loopback ports, so that its
// CPU can be read apart from the load driver's.
// serveArgs are added to the gateway's flags (the Kafka security ones).
func startLocal(ctx context.Context, s *bench.Suite, serveArgs []string, stderr io.Writer) (*localProcs, error) {
	l := &localProcs{}
	if s.Addr != "" {
		return l, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this binary to start a gateway: %w", err)
	}
	if s.Brokers == "" {
		addr, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		c, err := l.start(exe, "devbroker", "--addr", addr, "--partitions", strconv.Itoa(s.Shards), "--log-level", "warn")
		if err != nil {
			return nil, err
		}
		if err := waitFor(ctx, c, "the devbroker on "+addr, func() bool { return dialable(addr) }); err != nil {
			l.stop()
			return nil, err
		}
		s.Brokers, s.BrokerPID = addr, c.cmd.Process.Pid
	}
	grpcAddr, err1 := freeLoopbackAddr()
	httpAddr, err2 := freeLoopbackAddr()
	if err := errors.Join(err1, err2); err != nil {
		l.stop()
		return nil, err
	}
	c, err := l.start(exe, append([]string{"serve", "--brokers", s.Brokers, "--gossip-addr", "", "--grpc-addr", grpcAddr,
		"--http-addr", httpAddr, "--log-level", "warn"}, serveArgs...)...)
	if err != nil {
		l.stop()
		return nil, err
	}
	if err := waitFor(ctx, c, "the gateway's /readyz on "+httpAddr, func() bool { return ready(httpAddr) }); err != nil {
		l.stop()
		return nil, err
	}
	s.Addr, s.GatewayPID = grpcAddr, c.cmd.Process.Pid
	fmt.Fprintf(stderr, "bench: started a devbroker (%s) and a gateway (%s) as processes of their own\n", s.Brokers, s.Addr)
	return l, nil
}

func (l *localProcs) start(exe string, args ...string) (*child, error) {
	c := &child{name: args[0], out: &bytes.Buffer{}, exited: make(chan struct{})}
	c.cmd = exec.Command(exe, args...)
	c.cmd.Stdout = &tailWriter{b: c.out, mu: &c.mu}
	c.cmd.Stderr = c.cmd.Stdout
	// Only the gateway's own settings: a STREAMGATE_ variable meant for
	// bench must not reach its children.
	c.cmd.Env = withoutStreamgateEnv(os.Environ())
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", c.name, err)
	}
	l.procs = append(l.procs, c)
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// failed reports a child that exited before stop.
func (l *localProcs) failed() error {
	for _, c := range l.procs {
		select {
		case <-c.exited:
			c.mu.Lock()
			stopping := c.stopping
			c.mu.Unlock()
			if !stopping {
				return fmt.Errorf("the %s exited during the run (%v); its last output:\n%s", c.name, c.err, c.output())
			}
		default:
		}
	}
	return nil
}

// stop ends the children, the gateway first: SIGTERM, then SIGKILL after
// 10 s.
func (l *localProcs) stop() {
	for i := len(l.procs) - 1; i >= 0; i-- {
		c := l.procs[i]
		c.mu.Lock()
		c.stopping = true
		c.mu.Unlock()
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	l.procs = nil
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// waitFor polls ok every 50 ms until it holds, the child exits, or 60 s
// pass.
func waitFor(ctx context.Context, c *child, what string, ok func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !ok() {
		select {
		case <-c.exited:
			return fmt.Errorf("the %s exited (%v) before %s answered; its output:\n%s", c.name, c.err, what, c.output())
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

func ready(httpAddr string) bool {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func withoutStreamgateEnv(env []string) []string {
	out := env[:0:0]
	for _, e := range env {
		if len(e) < len("STREAMGATE_") || e[:len("STREAMGATE_")] != "STREAMGATE_" {
			out = append(out, e)
		}
	}
	return out
}

// tailWriter keeps the last 64 KiB written to it.
type tailWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - 64<<10; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}
