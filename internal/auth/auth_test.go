package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func bearer(tok string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
}

// requireUnauthenticated checks err is UNAUTHENTICATED and says why.
func requireUnauthenticated(t *testing.T, err error, why string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, codes.Unauthenticated, status.Code(err), err)
	require.Contains(t, status.Convert(err).Message(), why)
}

func TestAuthTokenFile(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.TokensFile = writeFile(t, dir, "tokens", "# comment\n\nalice "+hashHex("s3cret-a")+" ops dev\nbob sha256:"+hashHex("s3cret-b")+"\n")
	a, err := New(cfg, nil, nil)
	require.NoError(t, err)

	id, err := a.Authenticate(bearer("s3cret-a"))
	require.NoError(t, err)
	require.Equal(t, Identity{Name: "alice", Groups: []string{"ops", "dev"}, Method: "token"}, id)
	id, err = a.Authenticate(bearer("s3cret-b"))
	require.NoError(t, err)
	require.Equal(t, "bob", id.Name)

	_, err = a.Authenticate(bearer("wrong"))
	requireUnauthenticated(t, err, "not in the tokens file")
	_, err = a.Authenticate(context.Background())
	requireUnauthenticated(t, err, "no credentials")
	_, err = a.Authenticate(metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Basic abc")))
	requireUnauthenticated(t, err, "Bearer <token>")
}

func TestAuthTokenFileErrors(t *testing.T) {
	for name, content := range map[string]string{
		"plain token":  "alice s3cret\n",
		"one field":    "alice\n",
		"same hash":    "a " + hashHex("x") + "\nb " + hashHex("x") + "\n",
		"short hex":    "a abcd\n",
		"not hex at 3": "a " + hashHex("x") + "\n\nb zz" + hashHex("y")[2:] + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.TokensFile = writeFile(t, t.TempDir(), "tokens", content)
			_, err := New(cfg, nil, nil)
			require.ErrorContains(t, err, "line ")
		})
	}
}

func TestAuthJWTHMAC(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef-long-enough")
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.JWTHMACSecretFile = writeFile(t, dir, "secret", string(secret)+"\n")
	cfg.JWTIssuer, cfg.JWTAudience = "https://idp.example", "streamgate"
	cfg.JWTGroupsClaim = "realm.roles"
	a, err := New(cfg, nil, nil)
	require.NoError(t, err)
	now := time.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"sub": "carol", "iss": "https://idp.example", "aud": []string{"other", "streamgate"},
			"exp": now.Add(time.Hour).Unix(), "nbf": now.Add(-time.Minute).Unix(), "realm": map[string]any{"roles": []string{"writers"}}}
		if mod != nil {
			mod(c)
		}
		return c
	}

	id, err := a.Authenticate(bearer(signJWT(t, "HS256", "", secret, claims(nil))))
	require.NoError(t, err)
	require.Equal(t, Identity{Name: "carol", Groups: []string{"writers"}, Method: "jwt"}, id)

	for _, tc := range []struct {
		name, why string
		tok       string
	}{
		{"expired", "JWT expired at", signJWT(t, "HS256", "", secret, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() }))},
		{"no exp", "no exp claim", signJWT(t, "HS256", "", secret, claims(func(c map[string]any) { delete(c, "exp") }))},
		{"not yet", "not valid before", signJWT(t, "HS256", "", secret, claims(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() }))},
		{"wrong audience", `does not include this server's "streamgate"`, signJWT(t, "HS256", "", secret, claims(func(c map[string]any) { c["aud"] = "billing" }))},
		{"wrong issuer", `issuer "https://evil.example" is not the trusted issuer`, signJWT(t, "HS256", "", secret, claims(func(c map[string]any) { c["iss"] = "https://evil.example" }))},
		{"bad signature", "signature does not verify", signJWT(t, "HS256", "", []byte("another-secret-of-32-bytes-or-more!!"), claims(nil))},
		{"alg none", `algorithm "none"`, func() string {
			tok := signJWT(t, "HS256", "", secret, claims(nil))
			return enc.EncodeToString([]byte(`{"alg":"none"}`)) + tok[len(enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))):]
		}()},
		{"RS256 without JWKS", "JWKS file", signJWT(t, "RS256", "", secret, claims(nil))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Authenticate(bearer(tc.tok))
			requireUnauthenticated(t, err, tc.why)
		})
	}
	// Within the leeway an expired token still passes.
	_, err = a.Authenticate(bearer(signJWT(t, "HS256", "", secret, claims(func(c map[string]any) { c["exp"] = now.Add(-10 * time.Second).Unix() }))))
	require.NoError(t, err)
}

func TestAuthJWTSecretTooShort(t *testing.T) {
	cfg := DefaultConfig()
	cfg.JWTHMACSecretFile = writeFile(t, t.TempDir(), "secret", "short\n")
	_, err := New(cfg, nil, nil)
	require.ErrorContains(t, err, "at least 32")
}

func TestAuthJWTJWKS(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	cfg := DefaultConfig()
	cfg.JWKSFile = writeFile(t, t.TempDir(), "jwks.json", jwksOf(t, map[string]any{"r1": rsaKey, "e1": ecKey}))
	cfg.JWTAudience = "streamgate"
	a, err := New(cfg, nil, nil)
	require.NoError(t, err)
	claims := map[string]any{"sub": "svc-orders", "aud": "streamgate", "exp": time.Now().Add(time.Hour).Unix(), "groups": "a b"}

	id, err := a.Authenticate(bearer(signJWT(t, "RS256", "r1", rsaKey, claims)))
	require.NoError(t, err)
	require.Equal(t, Identity{Name: "svc-orders", Groups: []string{"a", "b"}, Method: "jwt"}, id)
	id, err = a.Authenticate(bearer(signJWT(t, "ES256", "e1", ecKey, claims)))
	require.NoError(t, err)
	require.Equal(t, "svc-orders", id.Name)
	// No kid: every key of the family is tried.
	_, err = a.Authenticate(bearer(signJWT(t, "ES256", "", ecKey, claims)))
	require.NoError(t, err)

	_, err = a.Authenticate(bearer(signJWT(t, "ES256", "e1", otherEC, claims)))
	requireUnauthenticated(t, err, "signature does not verify")
	_, err = a.Authenticate(bearer(signJWT(t, "ES256", "nope", ecKey, claims)))
	requireUnauthenticated(t, err, `key id "nope"`)
	_, err = a.Authenticate(bearer(signJWT(t, "HS256", "", []byte("0123456789abcdef0123456789abcdef"), claims)))
	requireUnauthenticated(t, err, "no HMAC secret")
	wrongAud := map[string]any{"sub": "x", "aud": "else", "exp": time.Now().Add(time.Hour).Unix()}
	_, err = a.Authenticate(bearer(signJWT(t, "RS256", "r1", rsaKey, wrongAud)))
	requireUnauthenticated(t, err, "audience")
}

func TestAuthConfigValidate(t *testing.T) {
	c := DefaultConfig()
	require.False(t, c.Enabled())
	c.PolicyFile = "p.yaml"
	require.ErrorContains(t, c.Validate(), "PolicyFile")
	c = DefaultConfig()
	c.JWTAudience = "x"
	require.ErrorContains(t, c.Validate(), "JWTAudience")
	c = DefaultConfig()
	c.TokensFile = "/nonexistent/tokens"
	_, err := New(c, nil, nil)
	require.ErrorContains(t, err, "tokens file /nonexistent/tokens")
}
