package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/internal/tlstest"
)

// TestCLI_TLSServeRequiringClientCertificatesThenPublishAndStatus runs
// serve with TLS and required client certificates, then the client
// commands with the --tls-* flags; without a client certificate they fail.
func TestCLI_TLSServeRequiringClientCertificatesThenPublishAndStatus(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	srv, cli := ca.Server(t, "node"), ca.Issue(t, "alice", tlstest.Options{})
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var serveLog syncBuffer // read while serve writes
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--embedded-topics", "demo", "--embedded-addr", freeAddr(t),
			"--gossip-addr", "127.0.0.1:0", "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-client-ca", ca.File, "--tls-client-auth", "require"},
			nil, &bytes.Buffer{}, &serveLog)
	}()
	defer func() {
		cancel()
		select {
		case err := <-served:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("serve did not stop after its context ended")
		}
	}()
	waitReady(t, httpAddr) // HTTP stays plaintext

	tlsArgs := []string{"--tls-ca", ca.File, "--tls-cert", cli.CertFile, "--tls-key", cli.KeyFile, "--tls-server-name", "localhost"}
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"publish", "--addr", grpcAddr, "--topic", "demo", "--message", "one", "--message", "two"}, tlsArgs...),
		nil, &out, &errOut)
	require.NoError(t, err, errOut.String())
	assert.Equal(t, 2, strings.Count(out.String(), "\tok\t"), out.String())

	out.Reset()
	err = run(context.Background(), append([]string{"status", "--addr", grpcAddr}, tlsArgs...), nil, &out, &errOut)
	require.NoError(t, err, errOut.String())
	assert.Contains(t, out.String(), "members")

	out.Reset()
	errOut.Reset()
	err = run(context.Background(), []string{"status", "--addr", grpcAddr, "--tls-ca", ca.File}, nil, &out, &errOut)
	require.Error(t, err, "no client certificate")
	assert.Contains(t, err.Error(), "Unavailable", "%v %s", err, errOut.String())

	require.Eventually(t, func() bool {
		return strings.Contains(serveLog.String(), `msg="TLS handshake refused"`) && strings.Contains(serveLog.String(), "certificate")
	}, 10*time.Second, 10*time.Millisecond, "the node says why it refused:\n%s", &serveLog)
	assert.NotContains(t, serveLog.String(), "PLAINTEXT")
	assert.Contains(t, serveLog.String(), `msg="gRPC API serves TLS"`)
	assert.Contains(t, serveLog.String(), "client_certificates=require")
}

func TestCLI_TLSFlagsThatDoNotGoTogetherAreUsageErrors(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	srv := ca.Server(t, "node")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", srv.CertFile}, "--tls-cert and --tls-key: give both or neither"},
		{[]string{"--tls-client-ca", ca.File}, "--tls-client-ca needs TLS on (--tls-cert and --tls-key)"},
		{[]string{"--cluster-tls-ca", ca.File}, "--cluster-tls-ca needs TLS on"},
		{[]string{"--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-client-auth", "require"}, "--tls-client-auth needs --tls-client-ca"},
		{[]string{"--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-client-ca", ca.File, "--tls-client-auth", "maybe"}, `--tls-client-auth "maybe": want request or require`},
		{[]string{"publish", "--topic", "t", "--tls-cert", srv.CertFile}, "--tls-cert and --tls-key: give both or neither"},
		{[]string{"status", "--tls-ca", "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // nothing may start; if something did, it stops at once
		_, errOut, err := runCLI(ctx, tc.args...)
		assert.Equal(t, exitError(2), err, "%v: %s", tc.args, errOut)
		assert.Contains(t, errOut, tc.want, "%v", tc.args)
	}

	t.Setenv("STREAMGATE_TLS_CLIENT_AUTH", "maybe")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, errOut, err := runCLI(ctx, "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-client-ca", ca.File)
	assert.Equal(t, exitError(2), err)
	assert.Contains(t, errOut, `--tls-client-auth (STREAMGATE_TLS_CLIENT_AUTH) "maybe": want request or require`)
}

func TestTLS_PlaintextOnANonLoopbackAddressWarnsOnce(t *testing.T) {
	for addr, warns := range map[string]bool{"[::]:50051": true, "0.0.0.0:50051": true, "10.0.0.5:50051": true, "127.0.0.1:50051": false, "[::1]:50051": false} {
		var buf bytes.Buffer
		tcp, err := net.ResolveTCPAddr("tcp", addr)
		require.NoError(t, err)
		warnPlaintext(slog.New(slog.NewTextHandler(&buf, nil)), tcp)
		assert.Equal(t, warns, strings.Contains(buf.String(), "level=WARN"), "%s: %s", addr, buf.String())
		assert.LessOrEqual(t, strings.Count(buf.String(), "\n"), 1)
	}
}
