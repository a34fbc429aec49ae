package calypso

// State is the state of a mass payout, as Calypso names it.
type State string

// Mass payout states, in the order a payout moves through them.
const (
	StateCreationInProgress  State = "CREATION_IN_PROGRESS"
	StatePendingConfirmation State = "PENDING_CONFIRMATION"
	StateConfirmed           State = "CONFIRMED"
	StateInProgress          State = "IN_PROGRESS"
	StateCompleted           State = "COMPLETED"
	StatePartial             State = "PARTIAL"
	StateFailed              State = "FAILED"
	StateCanceled            State = "CANCELED"
)

// rankTerminal is shared by all terminal states: once a payout is terminal no
// other state, terminal or not, may replace it.
const rankTerminal = 100

var stateRank = map[State]int{
	StateCreationInProgress:  1,
	StatePendingConfirmation: 2,
	StateConfirmed:           3,
	StateInProgress:          4,
	StateCompleted:           rankTerminal,
	StatePartial:             rankTerminal,
	StateFailed:              rankTerminal,
	StateCanceled:            rankTerminal,
}

// Known reports whether s is one of the documented states.
func (s State) Known() bool { _, ok := stateRank[s]; return ok }

// Terminal reports whether s is final: COMPLETED, PARTIAL, FAILED or
// CANCELED. Unknown states are not terminal (the safe reading: poll again).
func (s State) Terminal() bool { return stateRank[s] == rankTerminal }

// Rank orders states along the state machine so a consumer can refuse to
// move a payout backwards when webhooks arrive out of order: accept a new
// state only if its Rank is greater than the current one. All terminal
// states share the highest rank (the first terminal state seen sticks);
// unknown states rank 0, below everything.
func (s State) Rank() int { return stateRank[s] }

// String returns the state name.
func (s State) String() string { return string(s) }
