package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// Client certificate modes of a server (--tls-client-auth).
const (
	// ClientAuthRequest asks for a client certificate: a client without one
	// is let in, one that sends a certificate must pass verification.
	ClientAuthRequest = "request"
	// ClientAuthRequire turns away a client without a valid certificate.
	ClientAuthRequire = "require"
)

// Server is the TLS configuration of a server presenting r's certificate.
// With clientCAs, client certificates are verified against them in mode
// (ClientAuthRequest or ClientAuthRequire); without, none is asked for.
func Server(r *Reloader, clientCAs *x509.CertPool, mode string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
	if clientCAs == nil {
		if mode != "" {
			return nil, fmt.Errorf("client auth %q needs the CA to verify client certificates against", mode)
		}
		return cfg, nil
	}
	cfg.ClientCAs = clientCAs
	switch mode {
	case ClientAuthRequest:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequire, "":
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	default:
		return nil, fmt.Errorf("client auth %q: want request or require", mode)
	}
	return cfg, nil
}

// Client describes a TLS client's configuration.
type Client struct {
	// RootCAs verify the server; nil: CAFile, or the system roots when
	// CAFile is empty too.
	RootCAs *x509.CertPool
	CAFile  string
	// Reloader, when set, is the client certificate (mTLS), read again
	// when its files change; else CertFile and KeyFile, read once (both or
	// neither).
	Reloader          *Reloader
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must carry; empty:
	// the host of the address dialed.
	ServerName string
}

// Config builds the client's tls.Config.
func (c Client) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.RootCAs, ServerName: c.ServerName}
	if cfg.RootCAs == nil && c.CAFile != "" {
		pool, err := LoadPool(c.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.Reloader != nil:
		cfg.GetClientCertificate = c.Reloader.GetClientCertificate
	case c.CertFile != "" && c.KeyFile != "":
		cert, err := loadPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{*cert}
	case c.CertFile != "" || c.KeyFile != "":
		return nil, fmt.Errorf("a client certificate needs both its certificate and its key file")
	}
	return cfg, nil
}
