// Package tlsconf builds the TLS configurations of streamgate's gRPC API:
// the server's (a certificate reloaded when its files change, optional
// client certificates), the one nodes dial each other with, and a
// client's. It only reads files; flags are cmd's business.
package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultReloadInterval is how often a Reloader looks at its files.
const DefaultReloadInterval = 2 * time.Second

// Reloader holds a certificate and its key, read from PEM files, and reads
// them again when either file's modification time or size changes. A pair
// that fails to load (half-written, mismatched, not PEM) keeps the
// previous one in use and is logged; it is retried on the next change.
//
// GetCertificate and GetClientCertificate are safe for concurrent use (the
// TLS stack calls them on every handshake); Watch runs in one goroutine
// owned by whoever started it.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger

	cert atomic.Pointer[tls.Certificate]

	mu   sync.Mutex // guards seen: Check may be called by tests while Watch runs
	seen [2]fileStamp
}

// fileStamp is what tells a file changed without reading it.
type fileStamp struct {
	mod  time.Time
	size int64
}

// NewReloader loads the pair once: a pair that does not load at start is
// an error, not a warning.
func NewReloader(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log}
	stamps, err := r.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert.Store(cert)
	r.seen = stamps
	return r, nil
}

// loadPair reads and checks a certificate and its key.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return &cert, nil
}

func (r *Reloader) stamps() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return out, err
		}
		out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return out, nil
}

// Check reloads the pair if a file changed since the last load or attempt.
// It reports whether a new pair is now in use.
func (r *Reloader) Check() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamps, err := r.stamps()
	if err != nil {
		// A file being replaced (rename, delete then write) may be
		// missing for a moment: keep the old pair, try again later.
		r.log.Warn("TLS certificate files unreadable; keeping the loaded certificate", "cert", r.certFile, "key", r.keyFile, "err", err)
		return false
	}
	if stamps == r.seen {
		return false
	}
	r.seen = stamps
	cert, err := loadPair(r.certFile, r.keyFile)
	if err != nil {
		r.log.Warn("TLS certificate changed but does not load; keeping the previous one until the files change again", "err", err)
		return false
	}
	r.cert.Store(cert)
	r.log.Info("TLS certificate reloaded", "cert", r.certFile, "subject", subject(cert))
	return true
}

// subject names a certificate for logs.
func subject(c *tls.Certificate) string {
	if c.Leaf != nil {
		return c.Leaf.Subject.String()
	}
	if len(c.Certificate) > 0 {
		if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
			return leaf.Subject.String()
		}
	}
	return ""
}

// Watch checks the files every interval (DefaultReloadInterval when 0)
// until ctx ends.
func (r *Reloader) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Check()
		}
	}
}

// Subject names the certificate in use, for logs.
func (r *Reloader) Subject() string { return subject(r.cert.Load()) }

// Certificate is the pair in use.
func (r *Reloader) Certificate() *tls.Certificate { return r.cert.Load() }

// GetCertificate is a tls.Config.GetCertificate serving the pair in use.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// GetClientCertificate is a tls.Config.GetClientCertificate presenting the
// pair in use.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New(file + ": no PEM certificate in it")
	}
	return pool, nil
}
