package kafka

// How the backend reaches secured brokers: TLS and SASL for every client
// it opens (commonOpts), and the files an operator names them with.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/streamgate/streamgate/broker"
)

// SASL mechanisms the backend speaks, named as Kafka names them (and as
// the serve flag takes them, in lower case).
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// SASL authenticates the backend's connections. The zero value is off.
type SASL struct {
	// Mechanism is SASLPlain, SASLScramSHA256 or SASLScramSHA512 (case
	// does not matter); empty: no SASL.
	Mechanism string
	User      string
	Password  string
}

// String and LogValue keep the password out of logs, %v and %+v.
func (s SASL) String() string {
	if s.Mechanism == "" {
		return "none"
	}
	return fmt.Sprintf("%s user %q", strings.ToUpper(s.Mechanism), s.User)
}

// GoString keeps the password out of %#v.
func (s SASL) GoString() string { return "kafka.SASL{" + s.String() + "}" }

// LogValue implements slog.LogValuer.
func (s SASL) LogValue() slog.Value { return slog.StringValue(s.String()) }

// validate names the first bad field.
func (s SASL) validate() error {
	if s.Mechanism == "" {
		if s.User != "" || s.Password != "" {
			return errors.New("kafka: SASL.Mechanism: required with a SASL user or password")
		}
		return nil
	}
	if _, err := s.mechanism(); err != nil {
		return err
	}
	if s.User == "" {
		return fmt.Errorf("kafka: SASL.User: required with SASL mechanism %s", strings.ToUpper(s.Mechanism))
	}
	if s.Password == "" {
		return fmt.Errorf("kafka: SASL.Password: required with SASL mechanism %s", strings.ToUpper(s.Mechanism))
	}
	return nil
}

func (s SASL) mechanism() (sasl.Mechanism, error) {
	switch strings.ToUpper(s.Mechanism) {
	case SASLPlain:
		return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism(), nil
	case SASLScramSHA256:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism(), nil
	case SASLScramSHA512:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("kafka: SASL.Mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
}

// securityOpts are the TLS and SASL options of every client, with the
// hook that notices refused credentials.
func (b *Broker) securityOpts() []kgo.Opt {
	opts := b.cfg.SecurityOpts()
	if b.cfg.SASL.Mechanism != "" {
		opts = append(opts, kgo.WithHooks(&b.auth))
	}
	return opts
}

// SecurityOpts are franz-go's options for c's TLS and SASL: the ones every
// client of the backend uses, for other clients of the same brokers
// (bench --direct). Call Validate first: a bad mechanism is left out.
func (c *Config) SecurityOpts() []kgo.Opt {
	var opts []kgo.Opt
	if c.TLS != nil {
		// franz-go sets ServerName per broker on its own copy when the
		// config has none, so one config serves every broker.
		opts = append(opts, kgo.DialTLSConfig(c.TLS.Clone()))
	}
	if c.SASL.Mechanism != "" {
		if m, err := c.SASL.mechanism(); err == nil {
			opts = append(opts, kgo.SASL(m))
		}
	}
	return opts
}

// TLSFiles names the files of a TLS connection to the brokers.
type TLSFiles struct {
	// CAFile holds the PEM certificates that sign the brokers'
	// certificates; empty: the system's roots.
	CAFile string
	// CertFile and KeyFile, both or neither, hold the client certificate
	// the backend presents (for brokers that require mTLS).
	CertFile, KeyFile string
	// ServerName is checked against the brokers' certificates instead of
	// the host each is dialled at.
	ServerName string
	// InsecureSkipVerify accepts any broker certificate: for trials only.
	InsecureSkipVerify bool
}

// Load reads the files into a TLS client configuration. Errors name the
// field and file at fault.
func (f TLSFiles) Load() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         f.ServerName,
		InsecureSkipVerify: f.InsecureSkipVerify, //nolint:gosec // only when the operator asks for it
	}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: CAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka: CAFile %s: no PEM certificate in it", f.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.CertFile == "" && f.KeyFile == "":
	case f.CertFile == "" || f.KeyFile == "":
		return nil, errors.New("kafka: CertFile and KeyFile: give both or neither")
	default:
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: CertFile %s and KeyFile %s: %w", f.CertFile, f.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// saslWatch notices the brokers refusing the backend's SASL credentials.
// Kafka answers SASL_AUTHENTICATION_FAILED, which translate maps; kfake,
// and brokers behind some proxies, just close the connection, which
// franz-go retries as a network error until the publish timeout. A
// connection closed on the SASLAuthenticate response is taken as a refusal
// until a later request succeeds; a network failure at exactly that step
// is reported as a refusal too, until the next success.
type saslWatch struct {
	sasl    SASL
	log     *slog.Logger
	refused atomic.Bool
}

var _ kgo.HookBrokerRead = (*saslWatch)(nil)

// OnBrokerRead implements kgo.HookBrokerRead.
func (w *saslWatch) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	switch key {
	case kmsg.SASLAuthenticate.Int16():
		if err != nil && !w.refused.Swap(true) {
			// Once per episode: every client retries, often.
			w.log.Error("the Kafka brokers closed the connection on the SASL credentials; check the user and password", "sasl", w.sasl, "err", err)
		}
	case kmsg.SASLHandshake.Int16(), kmsg.ApiVersions.Int16():
	default:
		if err == nil && w.refused.Swap(false) {
			w.log.Info("the Kafka brokers accept the SASL credentials again", "sasl", w.sasl)
		}
	}
}

// explain makes err a permission error while the credentials stand
// refused.
func (w *saslWatch) explain(err error) error {
	if err == nil || !w.refused.Load() || errors.Is(err, broker.ErrPermissionDenied) || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: the Kafka brokers refused the SASL credentials (%s): %w", broker.ErrPermissionDenied, w.sasl, err)
}
