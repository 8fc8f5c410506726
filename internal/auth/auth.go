package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Config says how callers prove who they are and what they may do. Auth
// is on when any way of authenticating is set.
type Config struct {
	// TokensFile lists static bearer tokens by their SHA-256 (tokens.go).
	// Default: none.
	TokensFile string
	// JWTHMACSecretFile holds the HS256/384/512 secret. Default: none.
	JWTHMACSecretFile string
	// JWKSFile holds the RSA and EC public keys of RS*/ES* tokens. Default:
	// none.
	JWKSFile string
	// JWTIssuer, when set, must equal a JWT's iss. Default: not checked.
	JWTIssuer string
	// JWTAudience, when set, must be in a JWT's aud. Default: not checked.
	JWTAudience string
	// JWTGroupsClaim names the claim that holds a JWT's groups (dots go
	// into nested objects). Default "groups".
	JWTGroupsClaim string
	// JWTLeeway is the clock skew allowed on exp and nbf. Default 30s.
	JWTLeeway time.Duration
	// MTLS accepts a verified client certificate as the identity (its
	// subject CN, else its first SAN). A certificate is accepted whenever
	// auth is on; MTLS alone turns auth on. Default false.
	MTLS bool
	// PolicyFile holds the rules (policy.go). Default: none, every
	// authenticated caller may do everything.
	PolicyFile string
	// ReloadInterval is how often the files are checked for changes.
	// Default 2s.
	ReloadInterval time.Duration
}

// DefaultConfig returns the defaults: auth off.
func DefaultConfig() Config {
	return Config{JWTGroupsClaim: "groups", JWTLeeway: 30 * time.Second, ReloadInterval: 2 * time.Second}
}

// Enabled says whether callers must authenticate.
func (c *Config) Enabled() bool {
	return c.TokensFile != "" || c.JWTHMACSecretFile != "" || c.JWKSFile != "" || c.MTLS
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	jwt := c.JWTHMACSecretFile != "" || c.JWKSFile != ""
	switch {
	case !jwt && (c.JWTIssuer != "" || c.JWTAudience != ""):
		return errors.New("auth: JWTIssuer, JWTAudience: need JWTHMACSecretFile or JWKSFile to verify tokens with")
	case c.PolicyFile != "" && !c.Enabled():
		return errors.New("auth: PolicyFile: needs a way to authenticate (TokensFile, JWTHMACSecretFile, JWKSFile or MTLS)")
	case c.JWTLeeway < 0 || c.JWTLeeway > 10*time.Minute:
		return fmt.Errorf("auth: JWTLeeway: must be between 0 and 10m, got %s", c.JWTLeeway)
	case c.ReloadInterval <= 0:
		return fmt.Errorf("auth: ReloadInterval: must be positive, got %s", c.ReloadInterval)
	}
	return nil
}

// maxLoggedDenials bounds the set of (identity, action, resource) whose
// denial was logged; when full it is emptied, so a caller cycling through
// endless names logs at most this many lines per cycle, never a flood.
const maxLoggedDenials = 4096

// Auth authenticates and authorizes. Its files are swapped atomically
// when they change, so checks never wait for a reload.
type Auth struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	tokens atomic.Pointer[tokenSet]
	keys   atomic.Pointer[jwtKeys]
	policy atomic.Pointer[Policy] // nil: allow every authenticated caller
	files  []*watchedFile
	denied *prometheus.CounterVec
	unauth prometheus.Counter

	mu     sync.Mutex          // guards logged
	logged map[string]struct{} // denials already logged
}

// New loads every configured file; a file that is missing or broken at
// start is an error (unlike on reload, there is no previous one to keep).
// reg receives streamgate_auth_denied_total{action} and
// streamgate_auth_unauthenticated_total; nil registers nothing.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Auth, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Auth{
		cfg: cfg, log: log, now: time.Now, logged: map[string]struct{}{},
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamgate_auth_denied_total", Help: "Requests and messages the policy refused, by action.",
		}, []string{"action"}),
		unauth: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamgate_auth_unauthenticated_total", Help: "Calls refused for missing or bad credentials.",
		}),
	}
	if reg != nil {
		reg.MustRegister(a.denied, a.unauth)
	}
	keys := &jwtKeys{}
	a.keys.Store(keys)
	if cfg.TokensFile != "" {
		a.files = append(a.files, &watchedFile{path: cfg.TokensFile, what: "tokens file", load: func(b []byte) error {
			ts, err := parseTokens(b)
			if err == nil {
				a.tokens.Store(ts)
			}
			return err
		}})
	}
	if cfg.JWTHMACSecretFile != "" {
		a.files = append(a.files, &watchedFile{path: cfg.JWTHMACSecretFile, what: "JWT HMAC secret file", load: func(b []byte) error {
			s, err := parseSecret(b)
			if err == nil {
				next := *a.keys.Load()
				next.secret = s
				a.keys.Store(&next)
			}
			return err
		}})
	}
	if cfg.JWKSFile != "" {
		a.files = append(a.files, &watchedFile{path: cfg.JWKSFile, what: "JWKS file", load: func(b []byte) error {
			k, err := parseJWKS(b)
			if err == nil {
				next := *a.keys.Load()
				next.keys = k
				a.keys.Store(&next)
			}
			return err
		}})
	}
	if cfg.PolicyFile != "" {
		a.files = append(a.files, &watchedFile{path: cfg.PolicyFile, what: "policy file", load: func(b []byte) error {
			p, err := parsePolicy(b)
			if err == nil {
				a.policy.Store(p)
			}
			return err
		}})
	}
	for _, f := range a.files {
		if _, err := f.check(); err != nil {
			return nil, err
		}
	}
	if cfg.Enabled() && cfg.PolicyFile == "" {
		log.Warn("authentication is on but no --auth-policy-file is set: every authenticated caller may publish, subscribe and administer everything")
	}
	return a, nil
}

// Run re-reads the files every ReloadInterval until ctx ends. A file that
// changed and parses replaces the old one; one that does not keeps the old
// and is logged once per broken content.
func (a *Auth) Run(ctx context.Context) {
	if len(a.files) == 0 {
		return
	}
	t := time.NewTicker(a.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, f := range a.files {
			changed, err := f.check()
			switch {
			case err != nil && changed:
				a.log.Warn("auth: keeping the previous "+f.what, "path", f.path, "err", err)
			case changed:
				a.log.Info("auth: reloaded the "+f.what, "path", f.path)
			}
		}
	}
}

// Authenticate finds the caller of ctx's call: a bearer token in the
// authorization metadata wins; else a verified client certificate. The
// error is an UNAUTHENTICATED status saying what is wrong.
func (a *Auth) Authenticate(ctx context.Context) (Identity, error) {
	id, err := a.authenticate(ctx)
	if err != nil {
		a.unauth.Inc()
		return Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

func (a *Auth) authenticate(ctx context.Context) (Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get("authorization"); len(vals) > 0 {
		scheme, token, ok := strings.Cut(vals[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
			return Identity{}, errors.New("authorization metadata must be \"Bearer <token>\"")
		}
		return a.token(strings.TrimSpace(token))
	}
	if id, ok := certIdentity(ctx); ok {
		return id, nil
	}
	var ways []string
	if a.cfg.TokensFile != "" || a.cfg.JWTHMACSecretFile != "" || a.cfg.JWKSFile != "" {
		ways = append(ways, "a bearer token (metadata \"authorization: Bearer <token>\")")
	}
	if a.cfg.MTLS || len(ways) == 0 {
		ways = append(ways, "a client certificate the server's CA verifies")
	}
	return Identity{}, fmt.Errorf("no credentials: this server needs %s", strings.Join(ways, " or "))
}

// token checks a bearer token: a JWT when it looks like one and JWT keys
// are set, else a static token.
func (a *Auth) token(tok string) (Identity, error) {
	keys := a.keys.Load()
	if strings.Count(tok, ".") == 2 && (keys.secret != nil || len(keys.keys) > 0) {
		return verifyJWT(tok, keys, jwtCheck{
			issuer: a.cfg.JWTIssuer, audience: a.cfg.JWTAudience, groupsClaim: a.cfg.JWTGroupsClaim,
			leeway: a.cfg.JWTLeeway, now: a.now(),
		})
	}
	if ts := a.tokens.Load(); ts != nil {
		if id, ok := ts.lookup(tok); ok {
			return id, nil
		}
		return Identity{}, errors.New("the bearer token is not in the tokens file")
	}
	return Identity{}, errors.New("the bearer token is not a JWT, and no tokens file is configured")
}

// certIdentity takes the identity of a verified client certificate.
func certIdentity(ctx context.Context) (Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	c := info.State.VerifiedChains[0][0]
	name := c.Subject.CommonName
	switch {
	case name != "":
	case len(c.DNSNames) > 0:
		name = c.DNSNames[0]
	case len(c.URIs) > 0:
		name = c.URIs[0].String()
	case len(c.EmailAddresses) > 0:
		name = c.EmailAddresses[0]
	default:
		return Identity{}, false
	}
	return Identity{Name: name, Groups: c.Subject.OrganizationalUnit, Method: "mtls"}, true
}

// Authorize checks the caller of ctx against the policy: nil, or a
// *DeniedError that is counted and logged once per identity, action and
// resource.
func (a *Auth) Authorize(ctx context.Context, action Action, res Resource) error {
	p := a.policy.Load()
	if p == nil {
		return nil
	}
	id, _ := FromContext(ctx)
	if p.Allows(id, action, res) {
		return nil
	}
	a.denied.WithLabelValues(string(action)).Inc()
	err := &DeniedError{Identity: id.Name, Action: action, Resource: res}
	key := id.Name + "\x00" + string(action) + "\x00" + string(res.Kind) + "\x00" + res.Name
	a.mu.Lock()
	_, seen := a.logged[key]
	if !seen {
		if len(a.logged) >= maxLoggedDenials {
			clear(a.logged)
		}
		a.logged[key] = struct{}{}
	}
	a.mu.Unlock()
	if !seen {
		a.log.Warn("auth: denied (logged once per identity, action and resource)", "identity", id.Name, "action", string(action), "resource", res.String())
	}
	return err
}

// AuthorizeAny is Authorize that passes when any one of actions is
// allowed; the denial names the first.
func (a *Auth) AuthorizeAny(ctx context.Context, res Resource, actions ...Action) error {
	p := a.policy.Load()
	if p == nil {
		return nil
	}
	id, _ := FromContext(ctx)
	for _, act := range actions[1:] {
		if p.Allows(id, act, res) {
			return nil
		}
	}
	return a.Authorize(ctx, actions[0], res)
}
