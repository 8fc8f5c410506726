package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/internal/buildbin"
)

// TestCLI_AuthServeWithTokensAndPolicyThenPublish runs the built binary as
// an operator would: serve with a tokens file and a policy, then publish
// with --token (and STREAMGATE_TOKEN): allowed, denied by the policy,
// and without or with a wrong token.
func TestCLI_AuthServeWithTokensAndPolicyThenPublish(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "streamgate")
	require.NoError(t, buildbin.Build(ctx, bin))

	line := func(id, tok string) string {
		h := sha256.Sum256([]byte(tok))
		return id + " " + hex.EncodeToString(h[:]) + "\n"
	}
	tokens := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte(line("alice", "alice-secret")+line("ops", "ops-secret")), 0o600))
	policy := filepath.Join(dir, "policy.yaml")
	require.NoError(t, os.WriteFile(policy, []byte(`rules:
  - identities: [alice]
    actions: [publish]
    topics: ["orders*"]
  - identities: [ops]
    actions: [admin]
    subscriptions: ["*"]
`), 0o600))

	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	var serveLog syncBuffer
	serve := exec.CommandContext(ctx, bin, "serve", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--gossip-addr", "",
		"--embedded-topics", "orders,payments", "--embedded-addr", freeAddr(t),
		"--auth-tokens-file", tokens, "--auth-policy-file", policy)
	serve.Stderr = &serveLog
	require.NoError(t, serve.Start())
	defer func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		_ = serve.Wait()
	}()
	waitReady(t, httpAddr)

	publish := func(env []string, args ...string) (string, int) {
		var out, errOut bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, append([]string{"publish", "--addr", grpcAddr}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String() + errOut.String(), ee.ExitCode()
		}
		require.NoError(t, err)
		return out.String() + errOut.String(), 0
	}
	out, code := publish(nil, "--topic", "orders", "--message", "one", "--token", "alice-secret")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "\tok\t")
	out, code = publish([]string{"STREAMGATE_TOKEN=alice-secret"}, "--topic", "orders", "--message", "two")
	require.Equal(t, 0, code, out)

	out, code = publish(nil, "--topic", "payments", "--message", "x", "--token", "alice-secret")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "PermissionDenied")
	require.Contains(t, out, `identity "alice" may not publish to topic "payments"`)

	out, code = publish(nil, "--topic", "orders", "--message", "x")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "Unauthenticated")
	require.Contains(t, out, "no credentials")
	out, code = publish(nil, "--topic", "orders", "--message", "x", "--token", "wrong")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "not in the tokens file")

	// status (Admin) with the admin's token; alice may not.
	var sout, serr bytes.Buffer
	st := exec.CommandContext(ctx, bin, "status", "--addr", grpcAddr, "--token", "ops-secret")
	st.Stdout, st.Stderr = &sout, &serr
	require.NoError(t, st.Run(), serr.String())
	st = exec.CommandContext(ctx, bin, "status", "--addr", grpcAddr, "--token", "alice-secret")
	serr.Reset()
	st.Stderr = &serr
	require.Error(t, st.Run())
	require.Contains(t, serr.String(), `may not administer the cluster`)

	require.NoError(t, serve.Process.Signal(syscall.SIGTERM))
	require.NoError(t, serve.Wait(), serveLog.String())
	require.Contains(t, serveLog.String(), "authentication on")
	require.Equal(t, 2, strings.Count(serveLog.String(), "auth: denied"), "a denial is logged once per identity, action and resource: alice on payments, alice on the cluster")
}

// TestCLI_AuthServeSettingsAreCheckedBeforeStart: auth settings that do
// not go together are usage errors naming their flags.
func TestCLI_AuthServeSettingsAreCheckedBeforeStart(t *testing.T) {
	base := []string{"serve", "--grpc-addr", holdAddr(t), "--http-addr", holdAddr(t), "--embedded-addr", holdAddr(t), "--gossip-addr", ""}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"audience without keys", []string{"--auth-jwt-audience", "x"}, "auth-jwt-issuer, --auth-jwt-audience: need --auth-jwt-hmac-secret-file or --auth-jwks-file"},
		{"policy without authentication", []string{"--auth-policy-file", "p.yaml"}, "--auth-policy-file: needs a way to authenticate"},
		{"mtls without client CA", []string{"--auth-mtls"}, "--auth-mtls needs --tls-client-ca"},
		{"leeway", []string{"--auth-tokens-file", "t", "--auth-jwt-leeway", "1h"}, "--auth-jwt-leeway: must be between 0 and 10m, got 1h0m0s"},
		{"cluster token without auth", []string{"--auth-cluster-token-file", "t"}, "--auth-cluster-token-file needs authentication on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, errOut, err := runCLI(ctx, append(append([]string{}, base...), tc.args...)...)
			require.Equal(t, exitError(2), err, errOut)
			require.Contains(t, errOut, tc.want)
		})
	}
}
