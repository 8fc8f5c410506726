package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/tlstest"
)

// Identities of the secured cluster's tokens file and policy.
const (
	// nodeIdentity is the nodes' cluster token: the describe and seek
	// fan-outs between nodes need admin on every subscription.
	nodeIdentity = "streamgate-node"
	// clientIdentity publishes and subscribes; the policy grants it nothing
	// else, so its describe calls show the subscriber's own-subscription
	// allowance.
	clientIdentity = "e2e-client"
	// opsIdentity lists the members (admin on "*").
	opsIdentity = "ops"
)

// secureCluster is what every node of a cluster needs to serve TLS (also
// between nodes) with bearer tokens and a policy, and what a test client
// needs to reach it.
type secureCluster struct {
	ca     *tlstest.CA
	shared []containerFile         // the same for every node
	certs  map[string]tlstest.Pair // node name -> its certificate
	tokens map[string]string       // identity -> token
}

// In-container paths; a scratch image has no folders, so the root.
const (
	caPath           = "/ca.pem"
	certPath         = "/node.pem"
	keyPath          = "/node-key.pem"
	tokensPath       = "/tokens"
	policyPath       = "/policy.yaml"
	clusterTokenPath = "/cluster-token"
)

// newSecureCluster makes a CA, a certificate per node naming the node, its
// pinned address (what other nodes dial: its gossiped gRPC address) and
// localhost (what the test dials, through a mapped port), a token per
// identity and a policy granting clientIdentity publish on topic and
// subscribe to subscription.
func newSecureCluster(t *testing.T, subnet netip.Prefix, names []string, topic, subscription string) *secureCluster {
	t.Helper()
	s := &secureCluster{
		ca:     tlstest.NewCA(t, "streamgate e2e CA"),
		certs:  map[string]tlstest.Pair{},
		tokens: map[string]string{},
	}
	for i, name := range names {
		s.certs[name] = s.ca.Issue(t, name, tlstest.Options{
			Hosts: []string{name, nodeIP(subnet, i).String(), "localhost", "127.0.0.1"},
		})
	}
	var tokensFile bytes.Buffer
	for _, id := range []string{nodeIdentity, clientIdentity, opsIdentity} {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		require.NoError(t, err)
		s.tokens[id] = hex.EncodeToString(b)
		sum := sha256.Sum256([]byte(s.tokens[id]))
		fmt.Fprintf(&tokensFile, "%s %s\n", id, hex.EncodeToString(sum[:]))
	}
	policy := fmt.Sprintf(`rules:
  - identities: [%s, %s]
    actions: [admin]
    subscriptions: ["*"]
  - identities: [%s]
    actions: [publish]
    topics: [%q]
  - identities: [%s]
    actions: [subscribe]
    topics: [%q]
    subscriptions: [%q]
`, nodeIdentity, opsIdentity, clientIdentity, topic, clientIdentity, topic, subscription)
	ca, err := os.ReadFile(s.ca.File)
	require.NoError(t, err)
	s.shared = []containerFile{
		{caPath, ca, 0o644},
		{tokensPath, tokensFile.Bytes(), 0o600},
		{policyPath, []byte(policy), 0o600},
		{clusterTokenPath, []byte(s.tokens[nodeIdentity] + "\n"), 0o600},
	}
	return s
}

// nodeOptions are the serve flags and files of node name: TLS with its own
// certificate, the other nodes verified against the CA, tokens, the policy
// and the cluster token.
func (s *secureCluster) nodeOptions(name string) ([]string, testcontainers.CustomizeRequestOption) {
	args := []string{
		"--tls-cert", certPath, "--tls-key", keyPath,
		"--cluster-tls-ca", caPath,
		"--auth-tokens-file", tokensPath,
		"--auth-policy-file", policyPath,
		"--auth-cluster-token-file", clusterTokenPath,
	}
	pair := s.certs[name]
	all := append([]containerFile{{certPath, pair.CertPEM, 0o644}, {keyPath, pair.KeyPEM, 0o600}}, s.shared...)
	files := make([]testcontainers.ContainerFile, len(all))
	for i, f := range all {
		// A Reader is consumed by one copy: a fresh one for each container.
		files[i] = testcontainers.ContainerFile{Reader: bytes.NewReader(f.content), ContainerFilePath: f.path, FileMode: f.mode}
	}
	return args, testcontainers.WithFiles(files...)
}

// containerFile is a file to copy into a container.
type containerFile struct {
	path    string
	content []byte
	mode    int64
}

// dial connects to node name at addr (a mapped port on the test's host)
// over TLS trusting only the cluster's CA, checking the node's name, and
// sending identity's token unless identity is empty.
func (s *secureCluster) dial(t *testing.T, addr, name, identity string) *client.Client {
	t.Helper()
	tlsOpt, err := client.WithTLS(client.TLS{CAFile: s.ca.File, ServerName: name})
	require.NoError(t, err)
	opts := []grpc.DialOption{tlsOpt}
	if identity != "" {
		opts = append(opts, client.WithToken(s.tokens[identity]))
	}
	c, err := client.Dial(addr, opts...)
	require.NoError(t, err)
	return c
}

// requireUnauthenticated checks that node name at addr, reached over TLS
// without a token, refuses a call with UNAUTHENTICATED.
func requireUnauthenticated(ctx context.Context, t *testing.T, s *secureCluster, addr, name string) {
	t.Helper()
	c := s.dial(t, addr, name, "")
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, _, err := c.Members(ctx)
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%s without a token: %v", name, err)
}
