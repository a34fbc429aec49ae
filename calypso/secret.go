package calypso

import (
	"fmt"
	"log/slog"
)

const redacted = "[REDACTED]"

// Secret holds a secret key (the API secret, a webhook subscription secret).
// Every way of printing it — fmt verbs, JSON, text, slog — gives
// "[REDACTED]", so a Config or an error can be logged safely. Reveal returns
// the value for the one place that needs it: the HMAC.
type Secret string

// Reveal returns the secret value. Use it only to compute a MAC.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer, for %#v.
func (Secret) GoString() string { return redacted }

// Format implements fmt.Formatter so that every verb (%x and %q included)
// prints the redaction, not the bytes.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON implements json.Marshaler.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler, for encoders other than JSON.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }
