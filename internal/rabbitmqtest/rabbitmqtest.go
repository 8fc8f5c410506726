// Package rabbitmqtest runs a real rabbitmq-server (Debian's package, with
// the stream plugin) as a plain child process for tests: no systemd, its own
// temporary directories, its own free ports and its own epmd, so that test
// binaries running at once do not meet. Start it once per test binary
// (TestMain) and share it; Restart gives outage tests a server that goes
// away and comes back on the same data and ports.
package rabbitmqtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ServerPath is where Debian's package puts the server script that runs
// the node in the foreground (the /usr/sbin wrapper redirects its output to
// /var/log and switches users through su).
const ServerPath = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// InstallHint is what a developer runs to get the server.
const InstallHint = "apt-get install -y rabbitmq-server"

// ReadyTimeout bounds a start; the server takes about 20 s on 2 cores.
var ReadyTimeout = 90 * time.Second

// ErrNotInstalled: no rabbitmq-server on this machine.
var ErrNotInstalled = errors.New("rabbitmq-server is not installed (" + InstallHint + ")")

// Server is one running rabbitmq-server node and the epmd it registers with.
type Server struct {
	dir        string
	nodePort   int
	distPort   int
	streamPort int
	epmdPort   int
	nodeName   string
	cred       *syscall.Credential // nil: run as the current user

	mu     sync.Mutex // guards the processes
	server *exec.Cmd
	epmd   *exec.Cmd
	exited chan struct{} // closed when server exits
	log    *bytes.Buffer
}

// Available says whether rabbitmq-server is installed here.
func Available() bool {
	_, err := os.Stat(ServerPath)
	return err == nil
}

// Start starts a node in a new temporary directory and waits until its
// stream port answers.
func Start() (*Server, error) {
	if !Available() {
		return nil, ErrNotInstalled
	}
	dir, err := os.MkdirTemp("", "rabbitmqtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir}
	ports, err := freePorts(4)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.nodePort, s.distPort, s.streamPort, s.epmdPort = ports[0], ports[1], ports[2], ports[3]
	s.nodeName = fmt.Sprintf("sgtest%d-%d@localhost", os.Getpid(), s.streamPort)
	if err := s.prepareDirs(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.start(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// URI is the stream protocol address with the default guest user (allowed
// from localhost only, which is where the node runs).
func (s *Server) URI() string {
	return fmt.Sprintf("rabbitmq-stream://guest:guest@localhost:%d/", s.streamPort)
}

// StreamPort is the stream protocol port.
func (s *Server) StreamPort() int { return s.streamPort }

// Dir is the node's temporary directory (data, logs).
func (s *Server) Dir() string { return s.dir }

// Log is what the server printed so far, for test failure messages.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

func (s *Server) prepareDirs() error {
	for _, d := range []string{"mnesia", "log", "home"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(s.dir, "enabled_plugins"), []byte("[rabbitmq_stream].\n"), 0o644); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return nil // run as ourselves: our directories are ours already
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return fmt.Errorf("running as root needs the rabbitmq user (%s): %w", InstallHint, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	return filepath.Walk(s.dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
}

func (s *Server) env() []string {
	return append(os.Environ(),
		"HOME="+filepath.Join(s.dir, "home"), // the Erlang cookie lives here
		"ERL_EPMD_PORT="+strconv.Itoa(s.epmdPort),
		"RABBITMQ_NODENAME="+s.nodeName,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(s.nodePort),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(s.distPort),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(s.dir, "mnesia"),
		"RABBITMQ_FEATURE_FLAGS_FILE="+filepath.Join(s.dir, "feature_flags"),
		"RABBITMQ_LOG_BASE="+filepath.Join(s.dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(s.dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(s.dir, "none"), // no /etc/rabbitmq config
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(s.dir, "none-advanced.config"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(s.dir, "none-env.conf"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-rabbitmq_stream tcp_listeners ["+strconv.Itoa(s.streamPort)+"]",
		"RABBITMQ_LOGS=-", // to stdout, kept in s.log
	)
}

func (s *Server) command(path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Dir = s.dir
	cmd.Env = s.env()
	// A group of its own: Stop signals the script and the Erlang VM it
	// starts together, and a test's Ctrl-C does not reach it twice.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	return cmd
}

// start runs epmd (ours, on its own port, so that stopping it disturbs no
// other node) and the server, and waits until the stream port answers.
func (s *Server) start() error {
	s.mu.Lock()
	s.log = &bytes.Buffer{}
	w := &syncWriter{mu: &s.mu, buf: s.log}
	epmd := s.command("epmd", "-port", strconv.Itoa(s.epmdPort))
	epmd.Stdout, epmd.Stderr = w, w
	if err := epmd.Start(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("starting epmd: %w", err)
	}
	s.epmd = epmd
	server := s.command(ServerPath)
	server.Stdout, server.Stderr = w, w
	if err := server.Start(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("starting rabbitmq-server: %w", err)
	}
	s.server = server
	exited := make(chan struct{})
	s.exited = exited
	s.mu.Unlock()
	go func() { // owned by Stop, which waits for exited
		_ = server.Wait()
		close(exited)
	}()

	deadline := time.Now().Add(ReadyTimeout)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.streamPort))
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("rabbitmq-server exited while starting:\n%s", s.Log())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rabbitmq-server not ready after %s:\n%s", ReadyTimeout, s.Log())
		}
	}
}

// halt stops the server (SIGTERM, a graceful stop; SIGKILL after 30 s) and
// then our epmd, waiting for both.
func (s *Server) halt() {
	s.mu.Lock()
	server, epmd, exited := s.server, s.epmd, s.exited
	s.server, s.epmd = nil, nil
	s.mu.Unlock()
	if server != nil {
		_ = syscall.Kill(-server.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-server.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		// The VM may outlive the script that started it.
		_ = syscall.Kill(-server.Process.Pid, syscall.SIGKILL)
	}
	if epmd != nil {
		_ = syscall.Kill(-epmd.Process.Pid, syscall.SIGKILL)
		_ = epmd.Wait()
	}
}

// Restart stops the node and starts it again on the same data and ports,
// for tests of an outage. It returns once the node answers again.
func (s *Server) Restart() error {
	s.halt()
	return s.start()
}

// Kill stops the node without restarting it; Start it again with
// StartAgain.
func (s *Server) Kill() { s.halt() }

// StartAgain starts a node stopped by Kill on the same data and ports.
func (s *Server) StartAgain() error { return s.start() }

// Stop stops the node and its epmd and removes its directory.
func (s *Server) Stop() {
	s.halt()
	os.RemoveAll(s.dir)
}

// freePorts asks the kernel for n distinct free ports. They are free when
// asked; another process could take one before the server binds it, which
// makes a start fail loudly rather than meet another server.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

type syncWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() > 1<<20 { // keep the log bounded
		return len(p), nil
	}
	return w.buf.Write(p)
}
