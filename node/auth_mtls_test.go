package node_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/streamgate/streamgate/internal/auth"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/internal/tlsconf"
	"github.com/streamgate/streamgate/internal/tlstest"
	"github.com/streamgate/streamgate/node"
)

// TestAuthNodeMTLSIdentity: on a node serving TLS that requests client
// certificates, a certificate's CN is the identity the policy judges; a
// client without one is UNAUTHENTICATED.
func TestAuthNodeMTLSIdentity(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	serverPair, alicePair := ca.Server(t, "node"), ca.Issue(t, "alice", tlstest.Options{})
	r, err := tlsconf.NewReloader(serverPair.CertFile, serverPair.KeyFile, nil)
	require.NoError(t, err)
	scfg, err := tlsconf.Server(r, caPool(t, ca), tlsconf.ClientAuthRequest)
	require.NoError(t, err)
	cfg := auth.DefaultConfig()
	cfg.MTLS = true
	cfg.PolicyFile = filepath.Join(t.TempDir(), "policy.yaml")
	require.NoError(t, os.WriteFile(cfg.PolicyFile, []byte(authTestPolicy), 0o600))
	a, err := auth.New(cfg, nil, nil)
	require.NoError(t, err)
	env := testenv.Start(t, testenv.Options{
		Topics: []string{"orders", "payments"}, Partitions: 2,
		NodeOptions: func(o *node.Options) { o.Credentials, o.Auth = credentials.NewTLS(scfg), a },
		DialOptions: []grpc.DialOption{dialTLS(t, ca, &alicePair)},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(opt grpc.DialOption) *grpc.ClientConn {
		conn, err := grpc.NewClient(env.Addr, opt)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	res, err := publishBatch(ctx, t, dial(dialTLS(t, ca, &alicePair)), "orders", "payments")
	require.NoError(t, err)
	require.Nil(t, res["orders"].GetError())
	require.Equal(t, int32(codes.PermissionDenied), res["payments"].GetError().GetCode())
	require.Contains(t, res["payments"].GetError().GetMessage(), `identity "alice" may not publish to topic "payments"`)

	_, err = publishBatch(ctx, t, dial(dialTLS(t, ca, nil)), "orders")
	requireCode(t, err, codes.Unauthenticated, "no credentials: this server needs a client certificate")
}
