package main

// serve's settings: its flags, their defaults, and the checks that run
// before anything starts.

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/cluster"
	"github.com/streamgate/streamgate/internal/devbroker"
	"github.com/streamgate/streamgate/node"
)

// serveConfig is everything serve's flags set.
type serveConfig struct {
	node     node.Config
	kafka    kafka.Config     // Brokers empty: the embedded broker's
	cluster  cluster.Config   // completed by check; GRPCAddr defaults once gRPC listens
	embedded devbroker.Config // only without --brokers

	brokers, embeddedTopics, join listFlag
	backendKind, rabbitAddr       string // --backend kafka|rabbitmq, --rabbitmq-addr

	grpcAddr, httpAddr, debugAddr string
	gossipAddr, advertiseAddr     string
	advertiseGRPC, gossipKey      string
	drainTimeout                  time.Duration
	logFormat, logLevel           string
	kafkaSec                      kafkaSecurity // --kafka-tls*, --kafka-sasl-* (kafka_security.go)
	tls                           serveTLS      // --tls-*, --cluster-tls-* (serve_tls.go)
	auth                          serveAuth     // --auth-* (serve_auth.go)
}

func defaultServeConfig() serveConfig {
	c := serveConfig{
		node:         node.DefaultConfig(),
		kafka:        kafka.DefaultConfig(),
		cluster:      cluster.DefaultConfig(),
		embedded:     devbroker.DefaultConfig(),
		auth:         defaultServeAuth(),
		backendKind:  "kafka",
		rabbitAddr:   "rabbitmq-stream://guest:guest@localhost:5552/",
		grpcAddr:     ":50051",
		httpAddr:     ":8080",
		gossipAddr:   ":7946",
		drainTimeout: 30 * time.Second,
		logFormat:    "text",
		logLevel:     "info",
	}
	c.embedded.Addr = "127.0.0.1:9092"
	return c
}

// register defines serve's flags on fs.
func (c *serveConfig) register(fs *flag.FlagSet) {
	ncfg, kcfg, ccfg := &c.node, &c.kafka, &c.cluster
	fs.StringVar(&c.backendKind, "backend", c.backendKind, "the message backend: kafka or rabbitmq (RabbitMQ streams)")
	fs.StringVar(&c.rabbitAddr, "rabbitmq-addr", c.rabbitAddr, "with --backend rabbitmq: the server's stream endpoint, rabbitmq-stream://user:password@host:5552/vhost")
	fs.Var(&c.brokers, "brokers", "comma-separated Kafka bootstrap addresses (empty: start an embedded in-memory broker)")
	fs.StringVar(&c.grpcAddr, "grpc-addr", c.grpcAddr, "listen address of the gRPC API")
	fs.StringVar(&c.httpAddr, "http-addr", c.httpAddr, "listen address of /metrics, /healthz and /readyz (empty: off)")
	fs.StringVar(&c.debugAddr, "debug-addr", "", "listen address of /debug/pprof/ profiling (empty: off); keep it private, it exposes the process's internals")
	fs.StringVar(&ncfg.NodeName, "node-name", ncfg.NodeName, "unique name of this node in the cluster")
	fs.IntVar(&ncfg.PublishWindow, "publish-window", ncfg.PublishWindow, "unconfirmed publishes per stream before the node stops reading it")
	fs.Int64Var(&ncfg.MaxBufferedBytes, "max-buffered-bytes", ncfg.MaxBufferedBytes, "bytes of unconfirmed publishes the node holds across streams before all wait")
	fs.IntVar(&ncfg.MaxMessageBytes, "max-message-bytes", ncfg.MaxMessageBytes, "largest message accepted (topic, key, payload and headers)")
	fs.IntVar(&ncfg.MaxHeaders, "max-headers", ncfg.MaxHeaders, "most headers one published message may carry (0: no limit); a message over it fails alone with INVALID_ARGUMENT")
	fs.IntVar(&ncfg.MaxKeyBytes, "max-key-bytes", ncfg.MaxKeyBytes, "longest key of a published message, in bytes (0: no limit); a message over it fails alone with INVALID_ARGUMENT")
	fs.IntVar(&ncfg.MaxAckIDs, "max-ack-ids", ncfg.MaxAckIDs, "most message ids one ack, nack or modify_ack_deadline request may carry (0: no limit); over it the stream ends with INVALID_ARGUMENT")
	fs.DurationVar(&ncfg.KeepaliveMinTime, "keepalive-min-time", ncfg.KeepaliveMinTime, "a client pinging more often than this is closed (GOAWAY ENHANCE_YOUR_CALM); keep it below the clients' ping interval (the Go client pings every 10s)")
	fs.DurationVar(&ncfg.MaxConnectionAge, "max-connection-age", ncfg.MaxConnectionAge, "close a client connection this old (GOAWAY, give or take 10%) so that clients reconnect and load balancers spread long-lived streams again (0: never)")
	fs.DurationVar(&ncfg.MaxConnectionAgeGrace, "max-connection-age-grace", ncfg.MaxConnectionAgeGrace, "after --max-connection-age, how long the connection's streams may take to end before they are cut")
	fs.IntVar(&ncfg.MaxStreamsPerConnection, "max-streams-per-connection", ncfg.MaxStreamsPerConnection, "most concurrent calls on one client connection (HTTP/2 MAX_CONCURRENT_STREAMS: clients queue past it; 0: no limit)")
	fs.IntVar(&ncfg.MaxStreamsPerIdentity, "max-streams-per-identity", ncfg.MaxStreamsPerIdentity, "most Publish and Subscribe streams one caller (its identity with auth on, else its IP address) may have open on this node; past it RESOURCE_EXHAUSTED (0: no limit)")
	fs.Float64Var(&ncfg.MaxOpensPerSecond, "max-opens-per-second", ncfg.MaxOpensPerSecond, "Subscribe streams one caller may open per second (a burst of as many, at least 1); past it RESOURCE_EXHAUSTED saying when to retry (0: no limit)")
	fs.IntVar(&ncfg.MaxUnacked, "max-unacked", ncfg.MaxUnacked, "un-acked messages a subscriber may hold before deliveries to it stop: for subscriptions that set no max_unacked, and the most one may set")
	fs.DurationVar(&ncfg.AckTimeout, "ack-timeout", ncfg.AckTimeout, "a delivered message's ack deadline, for subscriptions that set no ack_deadline_seconds: a subscriber holding it un-acked this long, unless it extended the deadline (modify_ack_deadline), is disconnected and its messages redelivered")
	fs.DurationVar(&ncfg.ShardRefreshInterval, "shard-refresh-interval", ncfg.ShardRefreshInterval, "how often subscriptions look for shards added to their topics")
	fs.DurationVar(&kcfg.TopicCheckInterval, "topic-check-interval", kcfg.TopicCheckInterval, "how often a subscription checks that its topics still exist and were not recreated")
	fs.DurationVar(&kcfg.CommitInterval, "commit-interval", kcfg.CommitInterval, "save acked positions at least this often")
	fs.IntVar(&kcfg.CommitEvery, "commit-every", kcfg.CommitEvery, "save acked positions after this many acks of a subscription")
	fs.IntVar(&kcfg.MaxBufferedPerShard, "max-buffered-per-shard", kcfg.MaxBufferedPerShard, "undelivered + unsaved messages of a shard before it is paused at the broker")
	fs.IntVar(&kcfg.FetchMaxPartitionBytes, "fetch-max-shard-bytes", kcfg.FetchMaxPartitionBytes, "most bytes one fetch reads of one shard (a larger first message still comes whole); near what a shard has room for avoids reading records twice")
	fs.DurationVar(&kcfg.PublishTimeout, "publish-timeout", kcfg.PublishTimeout, "how long a message may wait for the broker's confirmation, retries included")
	fs.StringVar(&kcfg.SubscriptionsTopic, "subscriptions-topic", kcfg.SubscriptionsTopic, "Kafka's compacted topic that holds every subscription's settings (created on first use); every node of a cluster needs the same")
	c.kafkaSec.register(fs)
	fs.DurationVar(&kcfg.ProducerLinger, "producer-linger", kcfg.ProducerLinger, "how long the producer waits to fill a batch to a shard (0: none; a few ms cut CPU at low rates for as much latency)")
	fs.StringVar(&c.logFormat, "log-format", c.logFormat, "text or json")
	fs.StringVar(&c.logLevel, "log-level", c.logLevel, "debug, info, warn or error")
	fs.Var(&c.embeddedTopics, "embedded-topics", "topics the embedded broker creates at start (only without --brokers)")
	fs.StringVar(&c.embedded.Addr, "embedded-addr", c.embedded.Addr, "listen address of the embedded broker, for other Kafka clients such as kcat (only without --brokers)")
	fs.IntVar(&c.embedded.Partitions, "embedded-partitions", c.embedded.Partitions, "shards per topic of the embedded broker")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", c.drainTimeout, "on SIGTERM, how long subscribers may take to ack what they hold before their streams end")
	fs.StringVar(&c.gossipAddr, "gossip-addr", c.gossipAddr, "memberlist bind address (empty: no cluster, a node of its own)")
	fs.StringVar(&c.advertiseAddr, "advertise-addr", "", "host[:port] other nodes use to reach this one's gossip (default: derived from the bind address)")
	fs.StringVar(&c.advertiseGRPC, "advertise-grpc-addr", "", "host:port other nodes use to reach this one's gRPC API (default: the gossip advertise host with the --grpc-addr port)")
	fs.Var(&c.join, "join", "comma-separated seed nodes' gossip addresses (host names allowed); retried until one answers")
	fs.StringVar(&c.gossipKey, "gossip-key", "", "base64 gossip encryption key of 16, 24 or 32 bytes; every node needs the same")
	fs.DurationVar(&ccfg.ProbeInterval, "gossip-probe-interval", ccfg.ProbeInterval, "how often a node probes a random peer (failure detection)")
	fs.DurationVar(&ccfg.ProbeTimeout, "gossip-probe-timeout", ccfg.ProbeTimeout, "how long a probe waits for an answer")
	fs.IntVar(&ccfg.SuspicionMult, "gossip-suspicion-mult", ccfg.SuspicionMult, "a suspected node is declared dead after this many probe intervals (scaled by cluster size)")
	fs.DurationVar(&ccfg.GossipInterval, "gossip-interval", ccfg.GossipInterval, "how often gossip is sent")
	fs.DurationVar(&ccfg.PushPullInterval, "gossip-push-pull-interval", ccfg.PushPullInterval, "how often full state is exchanged with a random peer (anti-entropy)")
	c.tls.register(fs)
	c.auth.register(fs)
}

// The libraries' Validate errors name Config fields; these tables name the
// flags that set them instead. A field missing here is not set by a flag,
// so its default cannot be wrong.
var (
	nodeFlags = map[string]string{
		"NodeName": "node-name", "PublishWindow": "publish-window", "MaxBufferedBytes": "max-buffered-bytes",
		"MaxMessageBytes": "max-message-bytes", "MaxUnacked": "max-unacked", "AckTimeout": "ack-timeout",
		"ShardRefreshInterval": "shard-refresh-interval",
		"MaxHeaders":           "max-headers", "MaxKeyBytes": "max-key-bytes", "MaxAckIDs": "max-ack-ids",
		"KeepaliveMinTime": "keepalive-min-time", "MaxConnectionAge": "max-connection-age", "MaxConnectionAgeGrace": "max-connection-age-grace",
		"MaxStreamsPerConnection": "max-streams-per-connection", "MaxStreamsPerIdentity": "max-streams-per-identity", "MaxOpensPerSecond": "max-opens-per-second",
	}
	kafkaFlags = map[string]string{
		"Brokers": "brokers", "PublishTimeout": "publish-timeout", "MaxMessageBytes": "max-message-bytes",
		"CommitInterval": "commit-interval", "CommitEvery": "commit-every", "MaxBufferedPerShard": "max-buffered-per-shard",
		"TopicCheckInterval": "topic-check-interval", "ProducerLinger": "producer-linger",
		"FetchMaxPartitionBytes": "fetch-max-shard-bytes", "SubscriptionsTopic": "subscriptions-topic",
	}
	clusterFlags = map[string]string{
		"NodeName": "node-name", "BindAddr": "gossip-addr", "BindPort": "gossip-addr",
		"AdvertiseAddr": "advertise-addr", "AdvertisePort": "advertise-addr", "Join": "join",
		"SecretKey": "gossip-key", "GRPCAddr": "advertise-grpc-addr",
		"ProbeInterval": "gossip-probe-interval", "ProbeTimeout": "gossip-probe-timeout",
		"SuspicionMult": "gossip-suspicion-mult", "GossipInterval": "gossip-interval",
		"PushPullInterval": "gossip-push-pull-interval",
	}
	embeddedFlags  = map[string]string{"Addr": "embedded-addr", "Partitions": "embedded-partitions"}
	devbrokerFlags = map[string]string{"Addr": "addr", "Partitions": "partitions",
		"TLSCertFile": "tls-cert", "TLSKeyFile": "tls-key", "ACLs": "acls", "SASL": "sasl", "Users": "user"}
)

// namedByFlags rewrites a Validate error of package pkg ("node: MaxUnacked:
// must be at least 1, got 0") to name flags ("--max-unacked: must be at
// least 1, got 0"). Only the message changes; nothing compares it.
func namedByFlags(err error, pkg string, fields map[string]string, src sources) error {
	if err == nil {
		return nil
	}
	msg := strings.TrimPrefix(err.Error(), pkg+": ")
	if ce, ok := errors.AsType[*cluster.ConfigError](err); ok {
		msg = ce.Field + ": " + ce.Problem
	}
	names := make([]string, 0, len(fields))
	for f := range fields {
		names = append(names, regexp.QuoteMeta(f))
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	re := regexp.MustCompile(`\b(` + strings.Join(names, "|") + `)\b(\[\d+\])?`)
	return errors.New(re.ReplaceAllStringFunc(msg, func(m string) string {
		return src.describe(fields[re.FindStringSubmatch(m)[1]])
	}))
}

// checkAddr checks a host:port flag's syntax, so that a typo is reported
// before anything starts rather than when it listens.
func checkAddr(src sources, name, value, example string) error {
	host, port, err := net.SplitHostPort(value)
	if err == nil {
		_, err = lookupPort(port)
	}
	if err == nil && strings.ContainsAny(host, " \t,") {
		err = errors.New("bad host")
	}
	if err != nil {
		return fmt.Errorf("%s %q: want host:port such as %s", src.describe(name), value, example)
	}
	return nil
}

// lookupPort reads a port as net.Listen does: a number in 0-65535 or a
// service name ("http"); empty is 0, any free port.
func lookupPort(port string) (int, error) {
	return net.LookupPort("tcp", port)
}

// check validates every setting, and completes the cluster config, before
// serve starts anything. Its messages name flags.
func (c *serveConfig) check(src sources) error {
	if err := checkAddr(src, "grpc-addr", c.grpcAddr, ":50051"); err != nil {
		return err
	}
	if c.httpAddr != "" {
		if err := checkAddr(src, "http-addr", c.httpAddr, ":8080"); err != nil {
			return err
		}
	}
	if c.debugAddr != "" {
		if err := checkAddr(src, "debug-addr", c.debugAddr, "localhost:6060"); err != nil {
			return err
		}
	}
	if err := c.tls.check(src); err != nil {
		return err
	}
	if err := c.auth.check(src, c.tls.clientCA != ""); err != nil {
		return err
	}
	if c.drainTimeout < 0 {
		return fmt.Errorf("%s: must not be negative, got %s", src.describe("drain-timeout"), c.drainTimeout)
	}
	if err := c.node.Validate(); err != nil {
		return namedByFlags(err, "node", nodeFlags, src)
	}
	c.kafka.MaxMessageBytes = c.node.MaxMessageBytes
	c.kafka.Brokers = c.brokers
	k := c.kafka
	switch c.backendKind {
	case "kafka":
	case "rabbitmq":
		if !strings.HasPrefix(c.rabbitAddr, "rabbitmq-stream://") && !strings.HasPrefix(c.rabbitAddr, "rabbitmq-stream+tls://") {
			return fmt.Errorf("%s %q: want rabbitmq-stream://user:password@host:5552/vhost", src.describe("rabbitmq-addr"), c.rabbitAddr)
		}
		if len(c.brokers) > 0 {
			return fmt.Errorf("%s: Kafka addresses, but %s is rabbitmq", src.describe("brokers"), src.describe("backend"))
		}
		if c.kafkaSec.on(osLookupEnv) {
			return fmt.Errorf("the --kafka-tls* and --kafka-sasl-* settings are for Kafka, but %s is rabbitmq (its TLS and credentials go in --rabbitmq-addr)", src.describe("backend"))
		}
		return c.checkCluster(src)
	default:
		return fmt.Errorf("%s %q: want kafka or rabbitmq", src.describe("backend"), c.backendKind)
	}
	if len(c.brokers) == 0 && c.kafkaSec.on(osLookupEnv) {
		return fmt.Errorf("the --kafka-tls* and --kafka-sasl-* settings need %s: the embedded broker is plaintext without SASL (try 'streamgate devbroker' with its TLS and SASL flags)", src.describe("brokers"))
	}
	if err := c.kafkaSec.apply(src, osLookupEnv, &c.kafka); err != nil {
		return err
	}
	k.TLS, k.SASL = c.kafka.TLS, c.kafka.SASL
	if len(c.brokers) == 0 {
		if err := checkAddr(src, "embedded-addr", c.embedded.Addr, "127.0.0.1:9092"); err != nil {
			return err
		}
		c.embedded.Topics = c.embeddedTopics
		if err := c.embedded.Validate(); err != nil {
			return namedByFlags(err, "devbroker", embeddedFlags, src)
		}
		k.Brokers = []string{c.embedded.Addr} // where the embedded broker will be
	}
	if err := k.Validate(); err != nil {
		return namedByFlags(err, "kafka", kafkaFlags, src)
	}
	return c.checkCluster(src)
}

// checkCluster completes and checks the gossip settings.
func (c *serveConfig) checkCluster(src sources) error {
	if c.gossipAddr == "" {
		return nil
	}
	if err := c.completeCluster(src); err != nil {
		return err
	}
	return namedByFlags(c.cluster.Validate(), "cluster", clusterFlags, src)
}

// completeCluster maps the gossip flags onto the cluster config.
func (c *serveConfig) completeCluster(src sources) error {
	ccfg := &c.cluster
	host, port, err := net.SplitHostPort(c.gossipAddr)
	if err == nil {
		ccfg.BindPort, err = lookupPort(port)
	}
	if err != nil {
		return fmt.Errorf("%s %q: want host:port such as :7946 or 10.0.0.5:7946", src.describe("gossip-addr"), c.gossipAddr)
	}
	ccfg.NodeName = c.node.NodeName
	if host != "" {
		ccfg.BindAddr = host
	}
	if c.advertiseAddr != "" {
		h, p, err := net.SplitHostPort(c.advertiseAddr)
		if err != nil {
			h, p = c.advertiseAddr, ""
		}
		if strings.ContainsAny(h, " \t,") {
			return fmt.Errorf("%s %q: want host or host:port", src.describe("advertise-addr"), c.advertiseAddr)
		}
		ccfg.AdvertiseAddr = h
		if p != "" {
			if ccfg.AdvertisePort, err = lookupPort(p); err != nil {
				return fmt.Errorf("%s %q: want host or host:port", src.describe("advertise-addr"), c.advertiseAddr)
			}
		}
	}
	if c.advertiseGRPC != "" {
		if err := checkAddr(src, "advertise-grpc-addr", c.advertiseGRPC, "10.0.0.5:50051"); err != nil {
			return err
		}
	}
	if c.gossipKey != "" {
		if ccfg.SecretKey, err = base64.StdEncoding.DecodeString(c.gossipKey); err != nil {
			return fmt.Errorf("%s: want base64 (of 16, 24 or 32 bytes), such as the output of 'openssl rand -base64 32'", src.describe("gossip-key"))
		}
	}
	ccfg.Join = c.join
	ccfg.GRPCAddr = c.advertiseGRPC
	return nil
}

// defaultGRPCAddr is the gRPC address gossiped when --advertise-grpc-addr
// is not given: the advertised (or bound) host with the port gRPC listens on.
func (c *serveConfig) defaultGRPCAddr(listening net.Addr) string {
	_, port, _ := net.SplitHostPort(listening.String())
	h := c.cluster.AdvertiseAddr
	if h == "" {
		if h = c.cluster.BindAddr; h == "" || h == "0.0.0.0" || h == "::" {
			h, _ = os.Hostname()
		}
	}
	return net.JoinHostPort(h, port)
}
