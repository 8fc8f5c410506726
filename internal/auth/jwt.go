package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rsa"
	_ "crypto/sha256" // the hashes JWT algorithms name
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"
)

// jwtCheck is what a JWT is checked against besides its signature.
type jwtCheck struct {
	issuer, audience string // "" : not checked
	groupsClaim      string
	leeway           time.Duration
	now              time.Time
}

// algHash maps a JWT alg to its family and hash; "none" and anything
// unknown are refused.
func algHash(alg string) (family string, h crypto.Hash, ok bool) {
	if len(alg) != 5 {
		return "", 0, false
	}
	switch alg[2:] {
	case "256":
		h = crypto.SHA256
	case "384":
		h = crypto.SHA384
	case "512":
		h = crypto.SHA512
	default:
		return "", 0, false
	}
	switch alg[:2] {
	case "HS", "RS", "ES":
		return alg[:2], h, true
	}
	return "", 0, false
}

// verifyJWT checks token's signature with keys, then its claims, and
// returns the identity it names. Errors say why, for the caller.
func verifyJWT(token string, keys *jwtKeys, c jwtCheck) (Identity, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Identity{}, errors.New("malformed JWT: want three dot-separated parts")
	}
	hb, err := b64(parts[0])
	if err != nil {
		return Identity{}, errors.New("malformed JWT: the header is not base64url")
	}
	var hdr struct{ Alg, Kid string }
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return Identity{}, errors.New("malformed JWT: the header is not JSON")
	}
	sig, err := b64(parts[2])
	if err != nil {
		return Identity{}, errors.New("malformed JWT: the signature is not base64url")
	}
	family, h, ok := algHash(hdr.Alg)
	if !ok {
		return Identity{}, fmt.Errorf("JWT algorithm %q is not accepted (HS, RS or ES with 256, 384 or 512)", hdr.Alg)
	}
	hasher := h.New()
	hasher.Write([]byte(parts[0] + "." + parts[1]))
	if err := verifySig(family, hdr.Alg, hdr.Kid, h, hasher.Sum(nil), parts[0]+"."+parts[1], sig, keys); err != nil {
		return Identity{}, err
	}
	pb, err := b64(parts[1])
	if err != nil {
		return Identity{}, errors.New("malformed JWT: the claims are not base64url")
	}
	var claims map[string]any
	dec := json.NewDecoder(strings.NewReader(string(pb)))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return Identity{}, errors.New("malformed JWT: the claims are not a JSON object")
	}
	return checkClaims(claims, c)
}

// verifySig checks sig over signed with a key of the right family.
func verifySig(family, alg, kid string, h crypto.Hash, digest []byte, signed string, sig []byte, keys *jwtKeys) error {
	if family == "HS" {
		if keys.secret == nil {
			return fmt.Errorf("JWT signed with %s, but no HMAC secret is configured (--auth-jwt-hmac-secret-file)", alg)
		}
		m := hmac.New(h.New, keys.secret)
		m.Write([]byte(signed))
		if !hmac.Equal(m.Sum(nil), sig) {
			return errors.New("JWT signature does not verify")
		}
		return nil
	}
	tried := 0
	for _, k := range keys.keys {
		if (kid != "" && k.kid != kid) || (k.alg != "" && k.alg != alg) {
			continue
		}
		switch pub := k.pub.(type) {
		case *rsa.PublicKey:
			if family != "RS" {
				continue
			}
			tried++
			if rsa.VerifyPKCS1v15(pub, h, digest, sig) == nil {
				return nil
			}
		case *ecdsa.PublicKey:
			size := (pub.Curve.Params().BitSize + 7) / 8
			if family != "ES" || len(sig) != 2*size || !curveFits(alg, size) {
				continue
			}
			tried++
			r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
			if ecdsa.Verify(pub, digest, r, s) {
				return nil
			}
		}
	}
	if tried == 0 {
		if kid != "" {
			return fmt.Errorf("JWT key id %q with algorithm %s is not in the JWKS file", kid, alg)
		}
		return fmt.Errorf("no key of the JWKS file verifies algorithm %s", alg)
	}
	return errors.New("JWT signature does not verify")
}

// curveFits pairs ES256 with P-256, ES384 with P-384, ES512 with P-521.
func curveFits(alg string, size int) bool {
	return (alg == "ES256" && size == 32) || (alg == "ES384" && size == 48) || (alg == "ES512" && size == 66)
}

// checkClaims checks exp (required), nbf, iss and aud, and takes sub and
// the groups claim.
func checkClaims(claims map[string]any, c jwtCheck) (Identity, error) {
	exp, ok := numericDate(claims["exp"])
	if !ok {
		return Identity{}, errors.New("JWT has no exp claim (tokens that never expire are refused)")
	}
	if c.now.After(exp.Add(c.leeway)) {
		return Identity{}, fmt.Errorf("JWT expired at %s (now %s)", exp.UTC().Format(time.RFC3339), c.now.UTC().Format(time.RFC3339))
	}
	if v, present := claims["nbf"]; present {
		nbf, ok := numericDate(v)
		if !ok {
			return Identity{}, errors.New("JWT nbf claim is not a number")
		}
		if c.now.Add(c.leeway).Before(nbf) {
			return Identity{}, fmt.Errorf("JWT not valid before %s (now %s)", nbf.UTC().Format(time.RFC3339), c.now.UTC().Format(time.RFC3339))
		}
	}
	if c.issuer != "" {
		if iss, _ := claims["iss"].(string); iss != c.issuer {
			return Identity{}, fmt.Errorf("JWT issuer %q is not the trusted issuer %q", iss, c.issuer)
		}
	}
	if c.audience != "" {
		aud := stringList(claims["aud"])
		if !slices.Contains(aud, c.audience) {
			return Identity{}, fmt.Errorf("JWT audience %q does not include this server's %q", aud, c.audience)
		}
	}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return Identity{}, errors.New("JWT has no sub claim: the identity")
	}
	return Identity{Name: sub, Groups: stringList(claimPath(claims, c.groupsClaim)), Method: "jwt"}, nil
}

// claimPath follows a dotted claim name (realm_access.roles) into nested
// objects.
func claimPath(claims map[string]any, path string) any {
	if path == "" {
		return nil
	}
	var v any = claims
	for _, p := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// stringList reads a claim that is a string (space-separated, as OAuth
// scopes are) or an array of strings.
func stringList(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// numericDate reads a JWT NumericDate (seconds since the epoch, maybe
// fractional).
func numericDate(v any) (time.Time, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true
}
