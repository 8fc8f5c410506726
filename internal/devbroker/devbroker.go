// Package devbroker runs franz-go's kfake, an in-memory Kafka-protocol
// broker, for development and tests. Data is not durable unless DataDir is
// set, and even then kfake is no substitute for Kafka.
package devbroker

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config configures the development broker.
type Config struct {
	// Addr is the listen address. Default "127.0.0.1:0" (any free port).
	Addr string
	// AdvertiseHost is the host name clients are told to connect to, so that
	// containers can reach the broker by its network alias. Default: the
	// listen host (127.0.0.1 when listening on all interfaces).
	AdvertiseHost string
	// DataDir, when set, persists the broker's state there.
	DataDir string
	// Topics are created at start.
	Topics []string
	// Partitions is the shard count of created topics. Default 8.
	Partitions int
	// AutoCreateTopics lets producers create topics by naming them.
	// Default false, as on most production clusters.
	AutoCreateTopics bool
	// TLSCertFile and TLSKeyFile, both or neither: the broker speaks TLS
	// only, presenting this certificate.
	TLSCertFile, TLSKeyFile string
	// SASL makes clients authenticate as one of Users (kfake's default,
	// without Users, is SCRAM-SHA-256 admin/admin).
	SASL bool
	// Users are SASL users, with their ACLs (security.go).
	Users []User
	// ACLs: check every request against the users' ACLs; superusers pass.
	ACLs bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:0", Partitions: 8}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("devbroker: Addr %q: %w", c.Addr, err)
	}
	if c.Partitions < 1 {
		return fmt.Errorf("devbroker: Partitions: must be at least 1, got %d", c.Partitions)
	}
	return c.validateSecurity()
}

// Broker is a running development broker.
type Broker struct {
	*kfake.Cluster
	addr string
}

// Start starts a broker.
func Start(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	secOpts, err := cfg.securityOpts()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("devbroker: listen: %w", err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if cfg.AdvertiseHost != "" {
		host = cfg.AdvertiseHost
	} else if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	adv := Advertise(ln, net.JoinHostPort(host, port))
	used := false
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(cfg.Partitions),
		// kfake always asks for 127.0.0.1:port; hand it ours, which listens
		// where we were told and reports the advertised address.
		kfake.ListenFn(func(string, string) (net.Listener, error) {
			if used {
				return nil, errors.New("devbroker: one listener only")
			}
			used = true
			return adv, nil
		}),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if len(cfg.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(cfg.Partitions), cfg.Topics...))
	}
	if cfg.AutoCreateTopics {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	opts = append(opts, secOpts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("devbroker: %w", err)
	}
	return &Broker{Cluster: c, addr: ln.Addr().String()}, nil
}

// ListenAddr is the address the broker listens on (not the advertised one).
func (b *Broker) ListenAddr() string { return b.addr }

// Port is the listening port.
func (b *Broker) Port() int {
	_, p, _ := net.SplitHostPort(b.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Advertise wraps ln so that its Addr reports addr: kfake advertises its
// listener's address to clients and has no option of its own for it.
func Advertise(ln net.Listener, addr string) net.Listener {
	return &advertised{Listener: ln, addr: advertisedAddr(addr)}
}

type advertised struct {
	net.Listener
	addr net.Addr
}

func (a *advertised) Addr() net.Addr { return a.addr }

type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }
