package node_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/internal/tlsconf"
	"github.com/streamgate/streamgate/internal/tlstest"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// tlsNode starts a node serving TLS with pair's certificate and, with a
// client CA, client certificates in mode. Its env's own client trusts ca
// and, when clientPair is set, presents it.
func tlsNode(t *testing.T, ca *tlstest.CA, pair tlstest.Pair, clientCA *tlstest.CA, mode string, clientPair *tlstest.Pair) *testenv.Env {
	t.Helper()
	r, err := tlsconf.NewReloader(pair.CertFile, pair.KeyFile, nil)
	require.NoError(t, err)
	scfg, err := tlsconf.Server(r, caPool(t, clientCA), mode)
	require.NoError(t, err)
	return testenv.Start(t, testenv.Options{
		Topics:      []string{"t"},
		Partitions:  2,
		NodeOptions: func(o *node.Options) { o.Credentials = credentials.NewTLS(scfg) },
		DialOptions: []grpc.DialOption{dialTLS(t, ca, clientPair)},
	})
}

// caPool is ca's certificate as a pool; nil without a CA.
func caPool(t *testing.T, ca *tlstest.CA) *x509.CertPool {
	if ca == nil {
		return nil
	}
	p, err := tlsconf.LoadPool(ca.File)
	require.NoError(t, err)
	return p
}

// dialTLS is the client option trusting ca, presenting pair when set.
func dialTLS(t *testing.T, ca *tlstest.CA, pair *tlstest.Pair) grpc.DialOption {
	t.Helper()
	o := client.TLS{CAFile: ca.File}
	if pair != nil {
		o.CertFile, o.KeyFile = pair.CertFile, pair.KeyFile
	}
	opt, err := client.WithTLS(o)
	require.NoError(t, err)
	return opt
}

// dialPresenting is the client option trusting ca that presents pair
// whatever CAs the server names: Go's client would otherwise leave out a
// certificate the server's CAs did not sign, and the test would not reach
// the server's verification.
func dialPresenting(t *testing.T, ca *tlstest.CA, pair tlstest.Pair) grpc.DialOption {
	t.Helper()
	r, err := tlsconf.NewReloader(pair.CertFile, pair.KeyFile, nil)
	require.NoError(t, err)
	cfg, err := tlsconf.Client{CAFile: ca.File, Reloader: r}.Config()
	require.NoError(t, err)
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// listMembers makes one call on a new connection to addr.
func listMembers(t *testing.T, addr string, opts ...grpc.DialOption) error {
	t.Helper()
	c, err := client.Dial(addr, opts...)
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = pb.NewAdminClient(c.Conn()).ListMembers(ctx, &pb.ListMembersRequest{})
	return err
}

func TestTLS_ClientTrustingTheCAConnectsAndOneTrustingAnotherIsUnavailable(t *testing.T) {
	ca, other := tlstest.NewCA(t, "ca"), tlstest.NewCA(t, "other")
	env := tlsNode(t, ca, ca.Server(t, "node"), nil, "", nil)
	require.NoError(t, listMembers(t, env.Addr, dialTLS(t, ca, nil)))

	err := listMembers(t, env.Addr, dialTLS(t, other, nil))
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "certificate signed by unknown authority")

	err = listMembers(t, env.Addr) // plaintext to a TLS node
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}

func TestTLS_RequiredClientCertificatesTurnAwayMissingForeignAndExpiredOnes(t *testing.T) {
	ca, other := tlstest.NewCA(t, "ca"), tlstest.NewCA(t, "other")
	good := ca.Issue(t, "alice", tlstest.Options{})
	env := tlsNode(t, ca, ca.Server(t, "node"), ca, tlsconf.ClientAuthRequire, &good)
	require.NoError(t, listMembers(t, env.Addr, dialTLS(t, ca, &good)))

	foreign := other.Issue(t, "mallory", tlstest.Options{})
	expired := ca.Issue(t, "late", tlstest.Options{Expired: true})
	for name, opt := range map[string]grpc.DialOption{
		"none":         dialTLS(t, ca, nil),
		"another CA's": dialPresenting(t, ca, foreign),
		"expired":      dialPresenting(t, ca, expired),
	} {
		err := listMembers(t, env.Addr, opt)
		assert.Equal(t, codes.Unavailable, status.Code(err), "%s client certificate: %v", name, err)
	}
}

func TestTLS_RequestedClientCertificateMayBeMissingButNotForeign(t *testing.T) {
	ca, other := tlstest.NewCA(t, "ca"), tlstest.NewCA(t, "other")
	env := tlsNode(t, ca, ca.Server(t, "node"), ca, tlsconf.ClientAuthRequest, nil)
	require.NoError(t, listMembers(t, env.Addr, dialTLS(t, ca, nil)), "no certificate is let in")
	good := ca.Issue(t, "alice", tlstest.Options{})
	require.NoError(t, listMembers(t, env.Addr, dialTLS(t, ca, &good)))
	foreign := other.Issue(t, "mallory", tlstest.Options{})
	err := listMembers(t, env.Addr, dialPresenting(t, ca, foreign))
	assert.Equal(t, codes.Unavailable, status.Code(err), "a certificate sent is verified: %v", err)
}

// servedName is the common name of the certificate addr serves to a new
// connection.
func servedName(t *testing.T, addr string, ca *tlstest.CA) string {
	t.Helper()
	cfg, err := tlsconf.Client{CAFile: ca.File}.Config()
	require.NoError(t, err)
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "error: " + err.Error()
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// syncBuf is a log sink read while the node writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestTLS_ReplacedCertificateFilesServeNewConnectionsAndABrokenOneKeepsTheOld(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	first, second := ca.Server(t, "first"), ca.Server(t, "second")
	var logs syncBuf
	r, err := tlsconf.NewReloader(first.CertFile, first.KeyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	scfg, err := tlsconf.Server(r, nil, "")
	require.NoError(t, err)
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1,
		NodeOptions: func(o *node.Options) {
			o.Credentials = credentials.NewTLS(scfg)
			o.Watchers = append(o.Watchers, func(ctx context.Context) { r.Watch(ctx, 10*time.Millisecond) })
		},
		DialOptions: []grpc.DialOption{dialTLS(t, ca, nil)},
	})
	require.Equal(t, "first", servedName(t, env.Addr, ca))
	require.NoError(t, listMembers(t, env.Addr, dialTLS(t, ca, nil)), "the env's connection stays up across reloads")

	require.NoError(t, os.WriteFile(first.CertFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n"), 0o600))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "does not load") }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, "first", servedName(t, env.Addr, ca), "a broken file keeps the old certificate")

	require.NoError(t, os.WriteFile(first.KeyFile, second.KeyPEM, 0o600))
	require.NoError(t, os.WriteFile(first.CertFile, second.CertPEM, 0o600))
	require.Eventually(t, func() bool { return servedName(t, env.Addr, ca) == "second" }, 10*time.Second, 10*time.Millisecond)
	assert.Contains(t, logs.String(), "TLS certificate reloaded")
	require.NoError(t, listMembers(t, env.Addr, dialTLS(t, ca, nil)))
}

// Two nodes serving TLS and requiring client certificates reach each other
// for the Admin fan-out with the cluster credentials: a describe asked of
// node-2 counts the messages in flight on node-1, which only node-1 knows.
func TestTLS_ClusterDescribeFanOutBetweenTwoTLSNodes(t *testing.T) {
	const shards, n = 2, 10
	ca := tlstest.NewCA(t, "ca")
	nodePair := ca.Server(t, "node")
	r, err := tlsconf.NewReloader(nodePair.CertFile, nodePair.KeyFile, nil)
	require.NoError(t, err)
	pool, err := tlsconf.LoadPool(ca.File)
	require.NoError(t, err)
	scfg, err := tlsconf.Server(r, pool, tlsconf.ClientAuthRequire)
	require.NoError(t, err)
	ccfg, err := tlsconf.Client{RootCAs: pool, Reloader: r}.Config()
	require.NoError(t, err)
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t"}, Partitions: shards,
		NodeOptions: func(o *node.Options) {
			o.Credentials, o.ClusterCredentials = credentials.NewTLS(scfg), credentials.NewTLS(ccfg)
		},
		DialOptions: []grpc.DialOption{dialTLS(t, ca, &nodePair)},
	})
	sub := testenv.Subscribe(t, envs[0].Client, earliest("s", "t"))
	produceSpread(t, envs[0], "t", shards, n, 0)
	sub.WaitCount(n, 10*time.Second)
	var byName map[string]client.ShardInfo
	require.Eventually(t, func() bool {
		var err error
		_, byName, err = describe(envs[1].Client, "s")
		return err == nil && byName["t/0"].InFlight+byName["t/1"].InFlight == n
	}, 10*time.Second, 20*time.Millisecond, "node-2 asked node-1 over TLS: %+v", byName)
}
