package pipeline

import "github.com/payoutd/payoutd/calypso"

// Crash points, for the crash tests in package pipeline_test.
const (
	CrashWindowOpen  = crashWindowOpen
	CrashMidTxn      = crashMidTxn
	CrashAfterCommit = crashAfterCommit
	CrashAfterCreate = crashAfterCreate
)

type CrashPoint = crashPoint

var ErrCrashed = errCrashed

// CrashAt makes the batcher stop dead the first time it reaches p.
func (b *Batcher) CrashAt(p CrashPoint) { b.crash = once(p) }

// CrashAt makes the submitter stop dead the first time it reaches p.
func (s *Submitter) CrashAt(p CrashPoint) { s.crash = once(p) }

func once(p crashPoint) crashHook {
	done := false
	return func(at crashPoint) bool {
		if at != p || done {
			return false
		}
		done = true
		return true
	}
}

// SetClient replaces an account's Calypso client while the submitter runs,
// as an operator fixing its credentials would.
func (s *Submitter) SetClient(account string, c *calypso.Client) { s.accounts.set(account, c) }

// HostileInput is one input of the hostile corpus and its DLQ reason.
type HostileInput struct {
	Name, Value string
	Reason      Reason
}

// HostileCorpus returns the hostile corpus (request_fuzz_test.go).
func HostileCorpus() []HostileInput {
	out := make([]HostileInput, len(hostile))
	for i, h := range hostile {
		out[i] = HostileInput{h.name, h.value, h.reason}
	}
	return out
}

// HostileNow is the clock the hostile corpus is judged by.
var HostileNow = hostileNow
