package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// writeFile writes content to name in dir and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func hashHex(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

var enc = base64.RawURLEncoding

// signJWT makes a JWT of claims signed with key (a []byte HMAC secret, an
// *rsa.PrivateKey or an *ecdsa.PrivateKey).
func signJWT(t *testing.T, alg, kid string, key any, claims map[string]any) string {
	t.Helper()
	hdr := map[string]any{"alg": alg, "typ": "JWT"}
	if kid != "" {
		hdr["kid"] = kid
	}
	hb, err := json.Marshal(hdr)
	require.NoError(t, err)
	cb, err := json.Marshal(claims)
	require.NoError(t, err)
	signed := enc.EncodeToString(hb) + "." + enc.EncodeToString(cb)
	digest := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := key.(type) {
	case []byte:
		m := hmac.New(sha256.New, k)
		m.Write([]byte(signed))
		sig = m.Sum(nil)
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:])
		require.NoError(t, err)
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
		require.NoError(t, err)
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	}
	return signed + "." + enc.EncodeToString(sig)
}

// jwksOf writes the public halves of keys as a JWKS document.
func jwksOf(t *testing.T, keys map[string]any) string {
	t.Helper()
	var out []map[string]string
	for kid, k := range keys {
		switch k := k.(type) {
		case *rsa.PrivateKey:
			out = append(out, map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
				"n": enc.EncodeToString(k.N.Bytes()), "e": enc.EncodeToString(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PrivateKey:
			b, err := k.PublicKey.Bytes()
			require.NoError(t, err)
			out = append(out, map[string]string{"kty": "EC", "kid": kid, "crv": "P-256",
				"x": enc.EncodeToString(b[1:33]), "y": enc.EncodeToString(b[33:])})
		}
	}
	b, err := json.Marshal(map[string]any{"keys": out})
	require.NoError(t, err)
	return string(b)
}
