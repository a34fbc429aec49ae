package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/payoutd/payoutd/calypso"
)

// accountSpec is one Calypso merchant account as configured:
// "id=ACCOUNT,key=API_KEY,secret=API_SECRET" or "…,secret-file=PATH".
type accountSpec struct {
	ID     string
	Key    string
	Secret calypso.Secret
}

// parseAccount reads one account spec; where names the setting for errors,
// which never quote the secret.
func parseAccount(spec string) (accountSpec, error) {
	var a accountSpec
	var secretFile string
	for _, part := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, fmt.Errorf("%q is not key=value (want id=…,key=…,secret=… or secret-file=…)", redactPart(part))
		}
		switch k {
		case "id":
			a.ID = v
		case "key":
			a.Key = v
		case "secret":
			a.Secret = calypso.Secret(v)
		case "secret-file":
			secretFile = v
		default:
			return a, fmt.Errorf("unknown field %q (want id, key, secret or secret-file)", k)
		}
	}
	if secretFile != "" {
		if a.Secret != "" {
			return a, fmt.Errorf("account %q: give secret or secret-file, not both", a.ID)
		}
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return a, fmt.Errorf("account %q: cannot read secret-file %s: %v", a.ID, secretFile, unwrapPathErr(err))
		}
		a.Secret = calypso.Secret(strings.TrimRight(string(b), "\r\n"))
	}
	switch {
	case a.ID == "":
		return a, fmt.Errorf("an account has no id")
	case a.Key == "":
		return a, fmt.Errorf("account %q has no key", a.ID)
	case a.Secret == "":
		return a, fmt.Errorf("account %q has no secret", a.ID)
	}
	return a, nil
}

// redactPart keeps a malformed part's shape without its content: it may be
// a secret missing its "secret=", so nothing of a value is shown, only the
// name before a "=".
func redactPart(s string) string {
	if k, _, ok := strings.Cut(strings.TrimSpace(s), "="); ok {
		return k + "=…"
	}
	return "…"
}

// readLines returns the non-empty, non-comment lines of a file.
func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPathErr(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}

// parseWebhookKey reads "PUBLIC_KEY=SECRET".
func parseWebhookKey(spec string) (string, calypso.Secret, error) {
	k, v, ok := strings.Cut(strings.TrimSpace(spec), "=")
	if !ok || k == "" || v == "" {
		return "", "", fmt.Errorf("%q is not PUBLIC_KEY=SECRET", redactPart(spec))
	}
	return k, calypso.Secret(v), nil
}
