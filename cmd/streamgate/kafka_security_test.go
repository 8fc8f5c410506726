package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/internal/testcerts"
)

// TestCLI_ServeAndDevbrokerOverKafkaTLSAndSASLWithACLs: a devbroker with
// TLS, SASL/SCRAM users and an ACL that lets the gateway's user use only
// "orders"; serve reaches it with the --kafka-tls-* and --kafka-sasl-*
// flags (password from a file); publishing to orders works and to payroll
// is PERMISSION_DENIED through the node.
func TestCLI_ServeAndDevbrokerOverKafkaTLSAndSASLWithACLs(t *testing.T) {
	pki := testcerts.New(t)
	brokerAddr := freeAddr(t)
	bctx, stopBroker := context.WithCancel(context.Background())
	var brokerLog bytes.Buffer
	brokerOut := &syncWriter{w: &brokerLog}
	logged := func() string { // the devbroker writes on while we read
		brokerOut.mu.Lock()
		defer brokerOut.mu.Unlock()
		return brokerLog.String()
	}
	brokerDone := make(chan error, 1)
	go func() {
		brokerDone <- run(bctx, []string{"devbroker", "--addr", brokerAddr, "--topics", "orders,payroll", "--partitions", "2",
			"--tls-cert", pki.CertFile, "--tls-key", pki.KeyFile,
			"--superuser", "scram-sha-256:admin:admin-pw", "--user", "scram-sha-512:gateway:gateway-pw",
			"--acl", "allow:gateway:topic:orders*:all,allow:gateway:topic:__streamgate_subscriptions:all,allow:gateway:group:streamgate.*:all"},
			nil, &bytes.Buffer{}, brokerOut)
	}()
	t.Cleanup(func() {
		stopBroker()
		select {
		case <-brokerDone:
		case <-time.After(10 * time.Second):
			t.Error("devbroker did not stop")
		}
	})
	require.Eventually(t, func() bool { return strings.Contains(logged(), "devbroker listening") }, 10*time.Second, 20*time.Millisecond)
	assert.Contains(t, logged(), "tls=true")
	assert.Contains(t, logged(), "users=\"[scram-sha-256:admin scram-sha-512:gateway]\"")

	pwFile := filepath.Join(t.TempDir(), "kafka-password")
	require.NoError(t, os.WriteFile(pwFile, []byte("gateway-pw\n"), 0o600))
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var serveLog bytes.Buffer
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--gossip-addr", "",
			"--brokers", brokerAddr, "--kafka-tls-ca", pki.CAFile,
			"--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-user", "gateway", "--kafka-sasl-password-file", pwFile},
			nil, &bytes.Buffer{}, &syncWriter{w: &serveLog})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			assert.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop after its context ended")
		}
		assert.Contains(t, serveLog.String(), `tls=true sasl="SCRAM-SHA-512 user \"gateway\""`)
		assert.NotContains(t, serveLog.String(), "gateway-pw", "the password is never logged")
	})
	waitReady(t, httpAddr)

	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"publish", "--addr", grpcAddr, "--topic", "orders", "--message", "one"}, nil, &out, &errOut), errOut.String())
	assert.Contains(t, out.String(), "\tok\t")

	out.Reset()
	err := run(context.Background(), []string{"publish", "--addr", grpcAddr, "--topic", "payroll", "--message", "x"}, nil, &out, &errOut)
	require.Equal(t, exitError(1), err)
	assert.Contains(t, out.String(), "\terror\tPermissionDenied\t", "the broker's ACL denial reaches the client")
	assert.Contains(t, out.String(), "TOPIC_AUTHORIZATION_FAILED")
	assert.NotContains(t, logged(), "gateway-pw", "the devbroker does not log passwords either")

	// bench --direct makes its topics and produces with the same flags
	// (the password from the environment this time).
	t.Setenv("STREAMGATE_KAFKA_SASL_PASSWORD", "gateway-pw")
	out.Reset()
	errOut.Reset()
	err = run(context.Background(), []string{"bench", "--addr", grpcAddr, "--brokers", brokerAddr, "--direct", "--mode", "publish",
		"--count", "200", "--size", "64", "--shards", "2", "--topic", "orders-bench", "--timeout", "60s",
		"--kafka-tls-ca", pki.CAFile, "--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-user", "gateway"}, nil, &out, &errOut)
	require.NoError(t, err, errOut.String())
	assert.Contains(t, out.String(), "direct")
	assert.Contains(t, out.String(), "streamgate")
}

// TestCLI_ServeChecksTheKafkaSecuritySettingsNamingFlags: every bad TLS or
// SASL setting is a usage error naming its flag or variable, before
// anything starts, and no message repeats the password.
func TestCLI_ServeChecksTheKafkaSecuritySettingsNamingFlags(t *testing.T) {
	pki := testcerts.New(t)
	empty := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	base := []string{"serve", "--grpc-addr", holdAddr(t), "--http-addr", holdAddr(t), "--gossip-addr", ""}
	direct := []string{"--brokers", "127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"embedded broker", []string{"--kafka-tls"}, nil, "the --kafka-tls* and --kafka-sasl-* settings need --brokers"},
		{"rabbitmq", []string{"--backend", "rabbitmq", "--kafka-sasl-user", "u"}, nil, "the --kafka-tls* and --kafka-sasl-* settings are for Kafka, but --backend is rabbitmq"},
		{"missing CA", append(direct, "--kafka-tls-ca", "/nonexistent/ca.pem"), nil, "--kafka-tls-ca: open /nonexistent/ca.pem: no such file or directory"},
		{"CA not PEM", append(direct, "--kafka-tls-ca", empty), nil, "--kafka-tls-ca " + empty + ": no PEM certificate in it"},
		{"cert without key", append(direct, "--kafka-tls-cert", pki.CertFile), nil, "--kafka-tls-cert and --kafka-tls-key: give both or neither"},
		{"key not matching", append(direct, "--kafka-tls-cert", pki.CertFile, "--kafka-tls-key", pki.CAFile), nil, "--kafka-tls-cert " + pki.CertFile + " and --kafka-tls-key " + pki.CAFile + ": tls:"},
		{"mechanism", append(direct, "--kafka-sasl-mechanism", "gssapi", "--kafka-sasl-user", "u"), nil, `--kafka-sasl-mechanism "gssapi": want plain, scram-sha-256 or scram-sha-512`},
		{"user without mechanism", append(direct, "--kafka-sasl-user", "u"), nil, "--kafka-sasl-mechanism: required with a SASL user or password"},
		{"mechanism without user", append(direct, "--kafka-sasl-mechanism", "plain"), nil, "--kafka-sasl-user: required with --kafka-sasl-mechanism"},
		{"no password", append(direct, "--kafka-sasl-mechanism", "plain", "--kafka-sasl-user", "u"), nil,
			"--kafka-sasl-password-file or STREAMGATE_KAFKA_SASL_PASSWORD: required with --kafka-sasl-mechanism"},
		{"empty password file", append(direct, "--kafka-sasl-mechanism", "plain", "--kafka-sasl-user", "u", "--kafka-sasl-password-file", empty), nil,
			"--kafka-sasl-password-file " + empty + ": the file is empty"},
		{"both passwords", append(direct, "--kafka-sasl-mechanism", "plain", "--kafka-sasl-user", "u", "--kafka-sasl-password-file", empty),
			map[string]string{"STREAMGATE_KAFKA_SASL_PASSWORD": "hunter2"}, "--kafka-sasl-password-file and STREAMGATE_KAFKA_SASL_PASSWORD both set: give one"},
		{"password without mechanism", direct, map[string]string{"STREAMGATE_KAFKA_SASL_PASSWORD": "hunter2"},
			"STREAMGATE_KAFKA_SASL_PASSWORD is set but --kafka-sasl-mechanism is not"},
		{"from the environment", direct, map[string]string{"STREAMGATE_KAFKA_SASL_MECHANISM": "md5", "STREAMGATE_KAFKA_SASL_USER": "u", "STREAMGATE_KAFKA_SASL_PASSWORD": "hunter2"},
			`--kafka-sasl-mechanism (STREAMGATE_KAFKA_SASL_MECHANISM) "md5": want plain`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, errOut, err := runCLI(ctx, append(append([]string{}, base...), tc.args...)...)
			require.Equal(t, exitError(2), err, errOut)
			lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
			require.Len(t, lines, 2, errOut)
			assert.True(t, strings.HasPrefix(lines[0], "streamgate serve: "+tc.want), "got %q", lines[0])
			assert.NotContains(t, errOut, "hunter2")
		})
	}
}

// TestKafkaSecurity_ThePasswordComesFromTheEnvironmentOrAFile: the file's
// trailing newline is dropped; the mechanism is upper-cased for the
// backend; any --kafka-tls-* flag turns TLS on.
func TestKafkaSecurity_ThePasswordComesFromTheEnvironmentOrAFile(t *testing.T) {
	pki := testcerts.New(t)
	env := map[string]string{}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	k := kafkaSecurity{mechanism: "scram-sha-256", user: "gw"}
	k.files.CAFile = pki.CAFile
	env[kafkaPasswordEnv] = "from-env"
	var cfg kafka.Config
	require.NoError(t, k.apply(sources{}, lookup, &cfg))
	assert.Equal(t, kafka.SASL{Mechanism: "SCRAM-SHA-256", User: "gw", Password: "from-env"}, cfg.SASL)
	require.NotNil(t, cfg.TLS)
	assert.NotNil(t, cfg.TLS.RootCAs)

	delete(env, kafkaPasswordEnv)
	k.passwordFile = filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(k.passwordFile, []byte("from-file\r\n"), 0o600))
	cfg = kafka.Config{}
	require.NoError(t, k.apply(sources{}, lookup, &cfg))
	assert.Equal(t, "from-file", cfg.SASL.Password)
}

// TestCLI_DevbrokerChecksItsSecurityFlags: bad users, ACLs and TLS files
// are usage errors naming the flag, without the password.
func TestCLI_DevbrokerChecksItsSecurityFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", "c.pem"}, "--tls-cert and --tls-key: give both or neither"},
		{[]string{"--user", "scram-sha-256:gw"}, `--user "scram-sha-256:gw": want mechanism:name:password`},
		{[]string{"--superuser", "md5:admin:hunter2"}, `--superuser mechanism "md5": want plain, scram-sha-256 or scram-sha-512`},
		{[]string{"--acls"}, "--acls: need a superuser, or nobody can do anything"},
		{[]string{"--superuser", "plain:admin:hunter2", "--acl", "allow:nobody:topic:t:all"}, `--acl "allow:nobody:topic:t:all": "nobody" is not a --user`},
		{[]string{"--superuser", "plain:admin:hunter2", "--user", "plain:gw:hunter2", "--acl", "allow:gw:table:t:all"}, `--acl "allow:gw:table:t:all": unknown resource "table"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, errOut, err := runCLI(ctx, append([]string{"devbroker", "--addr", holdAddr(t)}, tc.args...)...)
			require.Equal(t, exitError(2), err, errOut)
			assert.True(t, strings.HasPrefix(errOut, "streamgate devbroker: "+tc.want), errOut)
			assert.NotContains(t, errOut, "hunter2")
		})
	}
}
