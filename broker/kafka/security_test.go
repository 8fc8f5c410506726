package kafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/internal/testcerts"
)

// securedHarness is a kfake broker started with opts (TLS, SASL, ACLs);
// the harness's own clients connect with clientOpts, as a superuser.
func securedHarness(t *testing.T, opts []kfake.Opt, clientOpts ...kgo.Opt) *harness {
	t.Helper()
	kf, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(kf.Close)
	prod, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(kf.ListenAddrs()...),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}, clientOpts...)...)
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	h := &harness{t: t, kf: kf, prod: prod, admin: kadm.NewClient(prod)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = h.admin.CreateTopic(ctx, 2, 1, nil, "orders")
	require.NoError(t, err)
	return h
}

// publishOne publishes one message and returns its result, failing the
// test if none comes within the timeout (a hang is a failure too).
func publishOne(t *testing.T, b *Broker, topic string, timeout time.Duration) broker.PublishResult {
	t.Helper()
	res := make(chan broker.PublishResult, 1)
	b.Publish(context.Background(), &broker.Message{Topic: topic, Payload: []byte("hello " + topic)}, func(r broker.PublishResult) { res <- r })
	select {
	case r := <-res:
		return r
	case <-time.After(timeout):
		t.Fatalf("no publish result for %s within %s", topic, timeout)
		return broker.PublishResult{}
	}
}

// roundTrip uses every kind of client the backend opens: the producer,
// the fenced-save client (Prepare), a consumer, the admin reads (Backlog,
// Inspect) and the subscription store's reader.
func roundTrip(t *testing.T, h *harness, b *Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, b.Ping(ctx))
	var published []string
	for range 3 {
		r := publishOne(t, b, "orders", 15*time.Second)
		require.NoError(t, r.Err)
		published = append(published, r.ID)
	}
	c := h.consume(b, "audit", broker.StartEarliest, shard("orders", 0), shard("orders", 1))
	ds := poll(t, c, 3, 15*time.Second)
	assert.ElementsMatch(t, published, ids(ds))
	c.Delivered(ids(ds)...)
	c.Ack(ids(ds)...)
	saveNow(t, c)
	backlog, err := b.Backlog(ctx, "audit", []broker.ShardID{shard("orders", 0), shard("orders", 1)})
	require.NoError(t, err)
	for s, n := range backlog {
		assert.Zero(t, n, "shard %v has nothing left", s)
	}
	_, err = b.Inspect(ctx, "audit", []string{"orders"})
	require.NoError(t, err)
	created, err := b.CreateSubscription(ctx, broker.SubscriptionConfig{Name: "billing", Topics: []string{"orders"}})
	require.NoError(t, err)
	got, err := b.GetSubscription(ctx, "billing")
	require.NoError(t, err)
	assert.Equal(t, created.Version, got.Version)
}

// TestTLS_TheBackendPublishesSubscribesAndStoresOverTLS: against a broker
// that speaks only TLS, with the CA from a file, every client works; a
// backend that trusts another CA fails its ping, it does not hang.
func TestTLS_TheBackendPublishesSubscribesAndStoresOverTLS(t *testing.T) {
	pki := testcerts.New(t)
	h := securedHarness(t, []kfake.Opt{kfake.TLS(pki.ServerConfig())},
		kgo.DialTLSConfig(&tls.Config{RootCAs: pki.CAPool, MinVersion: tls.VersionTLS12}))
	tlsCfg, err := TLSFiles{CAFile: pki.CAFile}.Load()
	require.NoError(t, err)
	b := h.backend(func(c *Config) { c.TLS = tlsCfg })
	roundTrip(t, h, b)

	other := testcerts.New(t)
	wrongCA, err := TLSFiles{CAFile: other.CAFile}.Load()
	require.NoError(t, err)
	bad := h.backend(func(c *Config) { c.TLS = wrongCA })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = bad.Ping(ctx)
	require.Error(t, err, "a broker certificate from another CA is refused")
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "the handshake fails, the ping does not wait out its deadline")
}

// TestSASL_TheBackendAuthenticatesWithEachMechanism: SCRAM-SHA-256,
// SCRAM-SHA-512 and PLAIN users reach every client's requests, over
// plaintext and (SCRAM-SHA-256) over TLS.
func TestSASL_TheBackendAuthenticatesWithEachMechanism(t *testing.T) {
	for _, tc := range []struct {
		mech string
		tls  bool
	}{{SASLScramSHA256, false}, {SASLScramSHA512, false}, {SASLPlain, false}, {SASLScramSHA256, true}} {
		t.Run(fmt.Sprintf("%s/tls=%v", tc.mech, tc.tls), func(t *testing.T) {
			opts := []kfake.Opt{kfake.EnableSASL(), kfake.Superuser(SASLScramSHA256, "admin", "admin-pw"),
				kfake.User(tc.mech, "gateway", "gateway-pw")}
			clientOpts := []kgo.Opt{kgo.SASL(scram.Auth{User: "admin", Pass: "admin-pw"}.AsSha256Mechanism())}
			var tlsCfg *tls.Config
			if tc.tls {
				pki := testcerts.New(t)
				opts = append(opts, kfake.TLS(pki.ServerConfig()))
				tlsCfg = &tls.Config{RootCAs: pki.CAPool, MinVersion: tls.VersionTLS12}
				clientOpts = append(clientOpts, kgo.DialTLSConfig(tlsCfg))
			}
			h := securedHarness(t, opts, clientOpts...)
			b := h.backend(func(c *Config) {
				c.TLS = tlsCfg
				c.SASL = SASL{Mechanism: tc.mech, User: "gateway", Password: "gateway-pw"}
			})
			roundTrip(t, h, b)
		})
	}
}

// TestSASL_AWrongPasswordFailsPublishesAndPingsAsPermissionDenied: the
// broker refusing the gateway's credentials (kfake closes the connection,
// as some proxies do) fails a ping at once and a publish by its timeout,
// both as permission denied naming the SASL user, never the password.
func TestSASL_AWrongPasswordFailsPublishesAndPingsAsPermissionDenied(t *testing.T) {
	for _, mech := range []string{"scram-sha-256", "plain"} {
		t.Run(mech, func(t *testing.T) {
			h := securedHarness(t, []kfake.Opt{kfake.EnableSASL(), kfake.Superuser(SASLScramSHA256, "admin", "admin-pw"),
				kfake.User(SASLPlain, "admin", "admin-pw")},
				kgo.SASL(scram.Auth{User: "admin", Pass: "admin-pw"}.AsSha256Mechanism()))
			b := h.backend(func(c *Config) {
				c.SASL = SASL{Mechanism: mech, User: "admin", Password: "wrong-pw"}
				c.PublishTimeout = 2 * time.Second
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			err := b.Ping(ctx)
			require.ErrorIs(t, err, broker.ErrPermissionDenied)
			assert.Less(t, time.Since(start), 5*time.Second)
			assert.Contains(t, err.Error(), `user "admin"`)
			assert.NotContains(t, err.Error(), "wrong-pw")

			r := publishOne(t, b, "orders", 10*time.Second)
			require.ErrorIs(t, r.Err, broker.ErrPermissionDenied)
			assert.NotContains(t, r.Err.Error(), "wrong-pw")
			assert.NotContains(t, fmt.Sprintf("%v %+v %#v", b.cfg, b.cfg, b.cfg), "wrong-pw", "a printed config hides the password")
		})
	}
}

// TestACL_ATopicTheBrokerDeniesIsPermissionDenied: with broker ACLs that
// let the gateway's user use one topic and not another, publishing and
// preparing a subscription on the other fail as permission denied while
// the first works.
func TestACL_ATopicTheBrokerDeniesIsPermissionDenied(t *testing.T) {
	h := securedHarness(t, []kfake.Opt{
		kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser(SASLScramSHA256, "admin", "admin-pw"),
		kfake.User(SASLScramSHA256, "gateway", "gateway-pw", gatewayACLs("orders")...),
	}, kgo.SASL(scram.Auth{User: "admin", Pass: "admin-pw"}.AsSha256Mechanism()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := h.admin.CreateTopic(ctx, 1, 1, nil, "payroll")
	require.NoError(t, err)
	b := h.backend(func(c *Config) {
		c.SASL = SASL{Mechanism: SASLScramSHA256, User: "gateway", Password: "gateway-pw"}
	})
	require.NoError(t, publishOne(t, b, "orders", 15*time.Second).Err)
	r := publishOne(t, b, "payroll", 15*time.Second)
	require.ErrorIs(t, r.Err, broker.ErrPermissionDenied)
	assert.Contains(t, r.Err.Error(), "TOPIC_AUTHORIZATION_FAILED")

	spec := broker.SubscriptionSpec{Name: "audit", Topics: []string{"payroll"}, Start: broker.StartEarliest}
	require.ErrorIs(t, b.Prepare(ctx, spec, []broker.ShardID{shard("payroll", 0)}), broker.ErrPermissionDenied)
	require.NoError(t, publishOne(t, b, "orders", 15*time.Second).Err, "the allowed topic still works")
}

// gatewayACLs lets a user do what the gateway needs on topic (and its
// groups, transactional ids and the subscription store's topic), nothing
// else.
func gatewayACLs(topic string) []kfake.ACL {
	return []kfake.ACL{
		{Resource: kmsg.ACLResourceTypeTopic, Name: topic, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true},
		{Resource: kmsg.ACLResourceTypeTopic, Name: "__streamgate_subscriptions", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true},
		{Resource: kmsg.ACLResourceTypeGroup, Name: "streamgate.", Pattern: kmsg.ACLResourcePatternTypePrefixed, Operation: kmsg.ACLOperationAll, Allow: true},
		{Resource: kmsg.ACLResourceTypeTransactionalId, Name: "streamgate.", Pattern: kmsg.ACLResourcePatternTypePrefixed, Operation: kmsg.ACLOperationAll, Allow: true},
	}
}

// TestTLS_ClientCertificatesAndServerNames: a broker requiring client
// certificates takes the backend's (CertFile, KeyFile) and refuses a
// backend without; ServerName is what the broker's certificate is checked
// against.
func TestTLS_ClientCertificatesAndServerNames(t *testing.T) {
	pki := testcerts.New(t, "broker.test")
	server := pki.ServerConfig()
	server.ClientAuth, server.ClientCAs = tls.RequireAndVerifyClientCert, pki.CAPool
	h := securedHarness(t, []kfake.Opt{kfake.TLS(server)},
		kgo.DialTLSConfig(&tls.Config{RootCAs: pki.CAPool, ServerName: "broker.test", Certificates: []tls.Certificate{pki.Cert}, MinVersion: tls.VersionTLS12}))
	ping := func(files TLSFiles) error {
		cfg, err := files.Load()
		require.NoError(t, err)
		b := h.backend(func(c *Config) { c.TLS = cfg })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return b.Ping(ctx)
	}
	require.NoError(t, ping(TLSFiles{CAFile: pki.CAFile, CertFile: pki.CertFile, KeyFile: pki.KeyFile, ServerName: "broker.test"}))
	require.Error(t, ping(TLSFiles{CAFile: pki.CAFile, ServerName: "broker.test"}), "no client certificate")
	err := ping(TLSFiles{CAFile: pki.CAFile, CertFile: pki.CertFile, KeyFile: pki.KeyFile})
	require.Error(t, err, "127.0.0.1 is not a name of the broker's certificate")
	require.NoError(t, ping(TLSFiles{CertFile: pki.CertFile, KeyFile: pki.KeyFile, InsecureSkipVerify: true}), "only when asked for")
}

func TestConfig_SASLSettingsAreCheckedAndThePasswordNeverPrinted(t *testing.T) {
	for _, tc := range []struct {
		sasl SASL
		want string
	}{
		{SASL{User: "u", Password: "hunter2"}, "SASL.Mechanism: required"},
		{SASL{Mechanism: "GSSAPI", User: "u", Password: "hunter2"}, `SASL.Mechanism "GSSAPI": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`},
		{SASL{Mechanism: "plain", Password: "hunter2"}, "SASL.User: required"},
		{SASL{Mechanism: "scram-sha-512", User: "u"}, "SASL.Password: required"},
	} {
		cfg := DefaultConfig("127.0.0.1:9092")
		cfg.SASL = tc.sasl
		err := cfg.Validate()
		require.ErrorContains(t, err, tc.want)
		assert.NotContains(t, err.Error(), "hunter2")
	}
	s := SASL{Mechanism: "scram-sha-256", User: "gw", Password: "hunter2"}
	for _, printed := range []string{fmt.Sprint(s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s), s.LogValue().String()} {
		assert.Equal(t, true, strings.Contains(printed, `SCRAM-SHA-256 user "gw"`) && !strings.Contains(printed, "hunter2"), printed)
	}
}
