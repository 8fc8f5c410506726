// Package tlstest makes throwaway certificate authorities and the
// certificates they sign, for TLS tests: nothing with key material is
// committed. Files go to the test's temporary folder.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

var serial atomic.Int64

// CA is a certificate authority.
type CA struct {
	File string // its certificate, PEM
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

// NewCA makes a CA valid for a day and writes its certificate to File.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	dir := t.TempDir()
	ca := &CA{File: filepath.Join(dir, "ca.pem"), cert: cert, key: key, dir: dir}
	must(t, os.WriteFile(ca.File, pemBlock("CERTIFICATE", der), 0o600))
	return ca
}

// Pair is a certificate and its key as PEM, and where they were written.
type Pair struct {
	CertPEM, KeyPEM   []byte
	CertFile, KeyFile string
}

// Options shape an issued certificate.
type Options struct {
	// Hosts are IP addresses or DNS names (SANs); default none.
	Hosts []string
	// Expired makes it valid only in the past.
	Expired bool
}

// Issue signs a certificate named cn, usable for both server and client
// authentication (a node presents its own to its peers), and writes it
// and its key to files named after cn.
func (ca *CA) Issue(t testing.TB, cn string, o Options) Pair {
	t.Helper()
	key := newKey(t)
	notBefore, notAfter := time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if o.Expired {
		notBefore, notAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	must(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	p := Pair{
		CertPEM:  pemBlock("CERTIFICATE", der),
		KeyPEM:   pemBlock("PRIVATE KEY", keyDER),
		CertFile: filepath.Join(ca.dir, cn+".pem"),
		KeyFile:  filepath.Join(ca.dir, cn+"-key.pem"),
	}
	must(t, os.WriteFile(p.CertFile, p.CertPEM, 0o600))
	must(t, os.WriteFile(p.KeyFile, p.KeyPEM, 0o600))
	return p
}

// Server issues a certificate for 127.0.0.1 and localhost.
func (ca *CA) Server(t testing.TB, cn string) Pair {
	return ca.Issue(t, cn, Options{Hosts: []string{"127.0.0.1", "localhost"}})
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	return key
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
