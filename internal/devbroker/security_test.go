package devbroker

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/streamgate/streamgate/internal/testcerts"
)

// TestDevbroker_TLSSASLAndACLs: a broker with TLS, a superuser, and a
// user whose ACL allows one topic: the user writes that topic and is
// refused the other; the superuser writes both.
func TestDevbroker_TLSSASLAndACLs(t *testing.T) {
	pki := testcerts.New(t)
	super, err := ParseUser("SCRAM-SHA-256:admin:admin-pw")
	require.NoError(t, err)
	super.Super = true
	user, err := ParseUser("plain:gw:gw-pw")
	require.NoError(t, err)
	name, acl, err := ParseACL("allow:gw:topic:ord*:all")
	require.NoError(t, err)
	require.Equal(t, "gw", name)
	assert.Equal(t, "ord", acl.Name)
	assert.Equal(t, kmsg.ACLResourcePatternTypePrefixed, acl.Pattern)
	user.ACLs = append(user.ACLs, acl)

	cfg := DefaultConfig()
	cfg.Topics, cfg.Partitions = []string{"orders", "payroll"}, 1
	cfg.TLSCertFile, cfg.TLSKeyFile = pki.CertFile, pki.KeyFile
	cfg.SASL, cfg.ACLs = true, true
	cfg.Users = []User{super, user}
	b, err := Start(cfg)
	require.NoError(t, err)
	defer b.Close()

	tlsCfg := &tls.Config{RootCAs: pki.CAPool, MinVersion: tls.VersionTLS12}
	produce := func(mech kgo.Opt, topic string) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenAddr()), kgo.DialTLSConfig(tlsCfg), mech, kgo.UnknownTopicRetries(0))
		require.NoError(t, err)
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr()
	}
	gw := kgo.SASL(plain.Auth{User: "gw", Pass: "gw-pw"}.AsMechanism())
	admin := kgo.SASL(scram.Auth{User: "admin", Pass: "admin-pw"}.AsSha256Mechanism())
	require.NoError(t, produce(gw, "orders"))
	require.ErrorIs(t, produce(gw, "payroll"), kerr.TopicAuthorizationFailed)
	require.NoError(t, produce(admin, "payroll"))
}

func TestDevbroker_SecurityConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.TLSCertFile = "c.pem" }, "TLSCertFile and TLSKeyFile: give both or neither"},
		{func(c *Config) { c.ACLs, c.SASL = true, true }, "ACLs: need a superuser"},
		{func(c *Config) {
			c.ACLs, c.Users = true, []User{{Mechanism: "PLAIN", Name: "a", Password: "p", Super: true}}
		}, "ACLs: need SASL"},
		{func(c *Config) { c.Users = []User{{Mechanism: "MD5", Name: "a", Password: "p"}} }, `Users: mechanism "MD5"`},
		{func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "/nonexistent/c.pem", "/nonexistent/k.pem" }, "TLSCertFile /nonexistent/c.pem and TLSKeyFile"},
	} {
		cfg := DefaultConfig()
		tc.mutate(&cfg)
		_, err := Start(cfg)
		require.ErrorContains(t, err, tc.want)
	}
	_, _, err := ParseACL("allow:gw:topic:t:fly")
	require.ErrorContains(t, err, `unknown operation "fly"`)
	_, err = ParseUser("plain:gw:")
	require.ErrorContains(t, err, "want mechanism:name:password")
}
