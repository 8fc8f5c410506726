package tlsconf

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/internal/tlstest"
)

func commonName(t *testing.T, r *Reloader) string {
	t.Helper()
	leaf, err := x509.ParseCertificate(r.Certificate().Certificate[0])
	require.NoError(t, err)
	return leaf.Subject.CommonName
}

// A replacement seen half-way (new certificate, old key), a missing file
// and garbage each keep the loaded pair and say why; the complete new pair
// is taken.
func TestTLSReloader_KeepsTheLoadedPairUntilTheNewOneLoads(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	first, second := ca.Server(t, "first"), ca.Server(t, "second")
	var logs bytes.Buffer
	r, err := NewReloader(first.CertFile, first.KeyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	assert.False(t, r.Check(), "nothing changed")

	require.NoError(t, os.WriteFile(first.CertFile, second.CertPEM, 0o600))
	assert.False(t, r.Check(), "certificate and key do not match yet")
	assert.Equal(t, "first", commonName(t, r))
	assert.Contains(t, logs.String(), "does not load")

	require.NoError(t, os.WriteFile(first.KeyFile, second.KeyPEM, 0o600))
	assert.True(t, r.Check())
	assert.Equal(t, "second", commonName(t, r))

	require.NoError(t, os.Remove(first.KeyFile))
	assert.False(t, r.Check())
	assert.Equal(t, "second", commonName(t, r))
	assert.Contains(t, logs.String(), "unreadable")

	require.NoError(t, os.WriteFile(first.KeyFile, []byte("garbage"), 0o600))
	assert.False(t, r.Check())
	assert.Equal(t, "second", commonName(t, r))
	assert.Equal(t, 1, strings.Count(logs.String(), "reloaded"))
}

func TestTLSReloader_APairThatDoesNotLoadAtStartIsAnError(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	p := ca.Server(t, "node")
	_, err := NewReloader(p.CertFile, ca.File, nil)
	assert.ErrorContains(t, err, p.CertFile)
	_, err = NewReloader("/nonexistent/cert.pem", p.KeyFile, nil)
	assert.ErrorContains(t, err, "/nonexistent/cert.pem")
}

func TestTLSServer_ClientAuthModes(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	p := ca.Server(t, "node")
	r, err := NewReloader(p.CertFile, p.KeyFile, nil)
	require.NoError(t, err)
	pool, err := LoadPool(ca.File)
	require.NoError(t, err)
	_, err = Server(r, nil, ClientAuthRequire)
	assert.ErrorContains(t, err, "needs the CA")
	_, err = Server(r, pool, "sometimes")
	assert.ErrorContains(t, err, "want request or require")
	cfg, err := Server(r, pool, "")
	require.NoError(t, err)
	assert.Equal(t, "RequireAndVerifyClientCert", cfg.ClientAuth.String(), "a CA without a mode requires")
	cfg, err = Server(r, pool, ClientAuthRequest)
	require.NoError(t, err)
	assert.Equal(t, "VerifyClientCertIfGiven", cfg.ClientAuth.String())
}
