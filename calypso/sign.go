package calypso

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/hex"
)

// Header names Calypso uses on requests and on webhooks.
const (
	HeaderKey  = "Key"
	HeaderSign = "Sign"
)

// SignBody returns Calypso's signature of body: lowercase hex of
// HMAC-SHA512(key = the secret's characters, message = body). The secret is
// used as text, not hex-decoded, as in Calypso's published examples.
func SignBody(secret Secret, body []byte) string {
	m := hmac.New(sha512.New, []byte(secret.Reveal()))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}
