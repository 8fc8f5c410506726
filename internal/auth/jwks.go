package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// jwtKeys are the keys JWTs are verified with: an HMAC secret, the public
// keys of a JWKS file, or both.
type jwtKeys struct {
	secret []byte   // HS256/384/512; nil: HMAC tokens are refused
	keys   []jwkKey // RS*/ES*
}

// jwkKey is one public key of a JWKS file.
type jwkKey struct {
	kid string
	alg string // the JWK's alg, "" when it names none
	pub crypto.PublicKey
}

// minHMACSecret is RFC 7518's floor for HS256: a key as long as the hash.
const minHMACSecret = 32

// parseSecret reads an HMAC secret file; one trailing newline is not part
// of the secret (editors add it).
func parseSecret(data []byte) ([]byte, error) {
	s := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if len(s) < minHMACSecret {
		return nil, fmt.Errorf("the secret has %d bytes; HS256 needs at least %d (openssl rand -base64 48)", len(s), minHMACSecret)
	}
	return []byte(s), nil
}

// parseJWKS reads a JWKS document ({"keys": [...]}) of RSA and EC public
// keys; keys of other types, or for encryption, are skipped.
func parseJWKS(data []byte) ([]jwkKey, error) {
	var doc struct {
		Keys []struct {
			Kty, Kid, Alg, Use string
			N, E               string
			Crv, X, Y          string
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS document: %w", err)
	}
	var keys []jwkKey
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		var pub crypto.PublicKey
		var err error
		switch k.Kty {
		case "RSA":
			pub, err = rsaKey(k.N, k.E)
		case "EC":
			pub, err = ecKey(k.Crv, k.X, k.Y)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
		}
		keys = append(keys, jwkKey{kid: k.Kid, alg: k.Alg, pub: pub})
	}
	if len(keys) == 0 {
		return nil, errors.New("no RSA or EC signing key in the JWKS document")
	}
	return keys, nil
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func rsaKey(n, e string) (*rsa.PublicKey, error) {
	nb, err := b64(n)
	if err != nil || len(nb) == 0 {
		return nil, errors.New("n is not base64url")
	}
	eb, err := b64(e)
	if err != nil || len(eb) == 0 || len(eb) > 4 {
		return nil, errors.New("e is not a base64url integer")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(new(big.Int).SetBytes(eb).Int64())}
	if pub.N.BitLen() < 2048 {
		return nil, fmt.Errorf("RSA key of %d bits; at least 2048 needed", pub.N.BitLen())
	}
	return pub, nil
}

func ecKey(crv, x, y string) (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("curve %q: want P-256, P-384 or P-521", crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	xb, err1 := b64(x)
	yb, err2 := b64(y)
	if err1 != nil || err2 != nil || len(xb) > size || len(yb) > size {
		return nil, errors.New("x or y is not a base64url coordinate of the curve")
	}
	pt := make([]byte, 1+2*size)
	pt[0] = 4
	copy(pt[1+size-len(xb):1+size], xb)
	copy(pt[1+2*size-len(yb):], yb)
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, pt)
	if err != nil {
		return nil, fmt.Errorf("not a point of %s: %w", crv, err)
	}
	return pub, nil
}
