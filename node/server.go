package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/internal/auth"
	"github.com/streamgate/streamgate/internal/codec"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Backend is what a node needs from the broker.
type Backend interface {
	broker.Publisher
	broker.Pinger
	broker.Subscriber
}

// Server is one streamgate node: the gRPC API (with health and reflection)
// and the HTTP endpoints /metrics, /healthz and /readyz.
type Server struct {
	cfg     Config
	backend Backend
	log     *slog.Logger
	reg     *prometheus.Registry
	grpc    *grpc.Server
	health  *health.Server
	http    *http.Server
	publish *publishService
	sub     *subscribeService
	members Membership
	stopBg  context.CancelFunc
	bg      sync.WaitGroup // background goroutines: the cluster watcher and the shard refresher

	// draining is the node's one drain flag: readiness reads it, the
	// subscribe service refuses new streams by it, and every subscription
	// stops fetching and ends its streams by it.
	draining atomic.Bool
}

// Options are a node's optional parts.
type Options struct {
	// Registry receives the node's metrics; nil makes a private one.
	Registry *prometheus.Registry
	// Logger; nil discards.
	Logger *slog.Logger
	// Cluster, when set, makes the node one member of a cluster; nil is a
	// cluster of one.
	Cluster Membership
	// Credentials secure the gRPC API (TLS, see internal/tlsconf); nil
	// serves plaintext. The HTTP endpoints are not affected.
	Credentials credentials.TransportCredentials
	// ClusterCredentials are what the node dials other members' Admin API
	// with (describe and seek fan-outs); nil: plaintext.
	ClusterCredentials credentials.TransportCredentials
	// Watchers run from NewServer until Shutdown or Kill, and are waited
	// for: the TLS certificates' reloaders. Each returns when ctx ends.
	Watchers []func(ctx context.Context)
	// Auth, when set, authenticates every call but health checks and
	// checks the policy (node/auth.go); its files are re-read by a
	// watcher of the server's. nil: anyone may do anything.
	Auth *auth.Auth
	// ClusterToken is the bearer token the node sends with its calls to
	// other members' Admin API when auth is on and the cluster does not
	// authenticate by client certificates; "": none.
	ClusterToken string
}

// NewServer builds a node.
func NewServer(cfg Config, backend Backend, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg, log := opts.Registry, opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s := &Server{
		cfg:     cfg,
		backend: backend,
		log:     log,
		reg:     reg,
		// Publish requests carry batches: allow more than gRPC's 4 MiB
		// default; the node-wide byte cap bounds what is held.
		// The codec decodes a request into one copy of it that payloads
		// point into (codec.Alias): the backend keeps them until produced
		// and never appends to them. grpc's default pool clears every
		// buffer it hands out (16 KiB per DATA frame). 1 MiB read and
		// write buffers take a batch in fewer system calls. Flow-control
		// windows stay grpc's (dynamic): static 4 MiB ones measured no
		// better and let a stalled stream buffer that much.
		// The keepalive policy, connection age and stream limits: limits.go.
		grpc: grpc.NewServer(append(append(append(credsOption(opts), authServerOptions(opts.Auth)...), limitServerOptions(cfg)...), grpc.MaxRecvMsgSize(maxRequestBytes(cfg)),
			grpc.ForceServerCodecV2(codec.New(codec.BufferPool(), codec.Alias)), experimental.BufferPool(codec.BufferPool()),
			grpc.ReadBufferSize(1<<20), grpc.WriteBufferSize(1<<20))...),
		health: health.NewServer(),
	}
	m := newMetrics(reg)
	s.publish = newPublishService(cfg, backend, m, log)
	s.publish.auth = opts.Auth
	pb.RegisterPublisherServer(s.grpc, s.publish)
	s.members = opts.Cluster
	s.sub = newSubscribeService(cfg, backend, m, log, opts.Cluster, &s.draining)
	s.sub.auth = opts.Auth
	pb.RegisterSubscriberServer(s.grpc, s.sub)
	pb.RegisterAdminServer(s.grpc, &adminService{cfg: cfg, backend: backend, subs: s.sub, members: opts.Cluster, peers: memberDialer{creds: opts.ClusterCredentials, token: opts.ClusterToken}})
	s.health.SetServingStatus(pb.Subscriber_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus(pb.Publisher_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", s.serveReady)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	bgCtx, stop := context.WithCancel(context.Background())
	s.stopBg = stop
	s.bg.Add(3)
	go func() {
		defer s.bg.Done()
		s.sub.watchCluster(bgCtx)
	}()
	go func() {
		defer s.bg.Done()
		s.sub.watchSubscriptions(bgCtx)
	}()
	go func() {
		defer s.bg.Done()
		s.sub.refreshShards(bgCtx, cfg.ShardRefreshInterval)
	}()
	if opts.Auth != nil {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			opts.Auth.Run(bgCtx)
		}()
	}
	for _, watch := range opts.Watchers {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			watch(bgCtx)
		}()
	}
	return s, nil
}

// maxRequestBytes is the largest request the server reads: a batch of
// several maximum-size messages.
func maxRequestBytes(cfg Config) int {
	return max(16<<20, 4*cfg.MaxMessageBytes+64<<10)
}

// serveReady answers 200 when the node takes traffic and the backend
// answers a ping within two seconds.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if s.members != nil && !s.members.Joined() {
		http.Error(w, "no seed node has answered yet (--join)", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.backend.Ping(ctx); err != nil {
		http.Error(w, "backend: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// Serve serves gRPC on grpcLis and HTTP on httpLis (nil: no HTTP) until
// Shutdown. It returns the first serving error, or nil after Shutdown.
func (s *Server) Serve(grpcLis, httpLis net.Listener) error {
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		errc <- s.grpc.Serve(grpcLis)
	}()
	if httpLis != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.http.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
	}
	err := <-errc
	if err != nil {
		s.grpc.Stop()
		_ = s.http.Close()
	}
	wg.Wait()
	return err
}

// Shutdown stops the node in order: health NOT_SERVING and readiness
// false; subscribers settle their in-flight messages and get the terminal
// "node draining" notice (until ctx ends, then at once); positions are saved
// and claims dropped; the node leaves the cluster; open publish streams
// finish (they too are cut when ctx ends); HTTP last.
func (s *Server) Shutdown(ctx context.Context) {
	s.draining.Store(true)
	s.health.Shutdown()
	s.sub.drain(ctx)
	s.stopBg()
	s.bg.Wait()
	if s.members != nil {
		if err := s.members.Leave(5 * time.Second); err != nil {
			s.log.Warn("leaving the cluster", "err", err)
		}
	}
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	hctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.http.Shutdown(hctx)
}

// Kill stops the node as a crash would, for tests: no drain, no saved
// positions beyond the last periodic save, no goodbye to the cluster. The
// backend's clients are the caller's to close.
func (s *Server) Kill() {
	s.stopBg()
	s.bg.Wait()
	s.grpc.Stop()
	_ = s.http.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.sub.wait(ctx)
}

// GRPC exposes the gRPC server, for tests that serve it themselves.
func (s *Server) GRPC() *grpc.Server { return s.grpc }
