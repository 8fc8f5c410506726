package main

// serve's authentication and authorization settings (internal/auth):
// bearer tokens from a file, JWTs, client certificates as identities, and
// the policy file.

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamgate/streamgate/internal/auth"
	"github.com/streamgate/streamgate/node"
)

// serveAuth is what serve's --auth-* flags set.
type serveAuth struct {
	cfg              auth.Config
	clusterTokenFile string
}

func defaultServeAuth() serveAuth { return serveAuth{cfg: auth.DefaultConfig()} }

func (a *serveAuth) register(fs *flag.FlagSet) {
	c := &a.cfg
	fs.StringVar(&c.TokensFile, "auth-tokens-file", "", "static bearer tokens, one a line: <identity> <sha256-hex-of-token> [group ...]; turns authentication on. Re-read when it changes (a broken file keeps the old one and is logged)")
	fs.StringVar(&c.JWTHMACSecretFile, "auth-jwt-hmac-secret-file", "", "file holding the HS256/384/512 secret (at least 32 bytes) JWTs are verified with; turns authentication on")
	fs.StringVar(&c.JWKSFile, "auth-jwks-file", "", "JWKS file of the RSA and EC public keys RS*/ES* JWTs are verified with; turns authentication on. Re-read when it changes")
	fs.StringVar(&c.JWTIssuer, "auth-jwt-issuer", "", "a JWT's iss must be this (empty: not checked)")
	fs.StringVar(&c.JWTAudience, "auth-jwt-audience", "", "a JWT's aud must include this (empty: not checked)")
	fs.StringVar(&c.JWTGroupsClaim, "auth-jwt-groups-claim", c.JWTGroupsClaim, "the JWT claim holding the caller's groups (a list, or a space-separated string; dots go into nested objects: realm_access.roles)")
	fs.DurationVar(&c.JWTLeeway, "auth-jwt-leeway", c.JWTLeeway, "clock skew allowed on a JWT's exp and nbf")
	fs.BoolVar(&c.MTLS, "auth-mtls", false, "take a verified client certificate's subject CN (else its first SAN) as the identity, its OUs as groups; needs --tls-client-ca. A certificate is accepted whenever authentication is on; this turns it on by itself")
	fs.StringVar(&c.PolicyFile, "auth-policy-file", "", "YAML or JSON rules of who may publish, subscribe and administer which topics and subscriptions (empty: every authenticated caller may do everything). Re-read when it changes")
	fs.DurationVar(&c.ReloadInterval, "auth-reload-interval", c.ReloadInterval, "how often the --auth-* files are checked for changes")
	fs.StringVar(&a.clusterTokenFile, "auth-cluster-token-file", "", "file holding the bearer token this node sends to other nodes' Admin API (describe and seek fan-outs); needed when authentication is on and nodes do not present client certificates; its identity needs admin on \"*\"")
}

// authFlags name the flags that set auth.Config's fields, for its
// Validate errors.
var authFlags = map[string]string{
	"TokensFile": "auth-tokens-file", "JWTHMACSecretFile": "auth-jwt-hmac-secret-file", "JWKSFile": "auth-jwks-file",
	"JWTIssuer": "auth-jwt-issuer", "JWTAudience": "auth-jwt-audience", "JWTLeeway": "auth-jwt-leeway",
	"MTLS": "auth-mtls", "PolicyFile": "auth-policy-file", "ReloadInterval": "auth-reload-interval",
}

// check validates the combination before anything starts; the files are
// read by apply. clientCA says whether --tls-client-ca is set.
func (a *serveAuth) check(src sources, clientCA bool) error {
	if err := a.cfg.Validate(); err != nil {
		return namedByFlags(err, "auth", authFlags, src)
	}
	if a.cfg.MTLS && !clientCA {
		return fmt.Errorf("%s needs %s: client certificates are only verified against it", src.describe("auth-mtls"), src.describe("tls-client-ca"))
	}
	if a.clusterTokenFile != "" && !a.cfg.Enabled() {
		return fmt.Errorf("%s needs authentication on (--auth-tokens-file, --auth-jwt-hmac-secret-file, --auth-jwks-file or --auth-mtls)", src.describe("auth-cluster-token-file"))
	}
	return nil
}

// apply reads the files and sets the node's Auth and ClusterToken.
// Without authentication it does nothing.
func (a *serveAuth) apply(opts *node.Options, log *slog.Logger, reg prometheus.Registerer) error {
	if !a.cfg.Enabled() {
		return nil
	}
	au, err := auth.New(a.cfg, log, reg)
	if err != nil {
		return err
	}
	opts.Auth = au
	if a.clusterTokenFile != "" {
		b, err := os.ReadFile(a.clusterTokenFile)
		if err != nil {
			return fmt.Errorf("--auth-cluster-token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return errors.New("--auth-cluster-token-file: the file is empty")
		}
		opts.ClusterToken = tok
	}
	log.Info("authentication on", "tokens_file", a.cfg.TokensFile, "jwt_hmac", a.cfg.JWTHMACSecretFile != "",
		"jwks_file", a.cfg.JWKSFile, "mtls", a.cfg.MTLS, "policy_file", a.cfg.PolicyFile)
	return nil
}
