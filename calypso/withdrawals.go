package calypso

import (
	"context"
	"fmt"
	"strings"
)

// PathWithdrawals lists the withdrawals of a mass payout, a page at a time.
// The notes (calypso-api.md §4.6, §9 #2) give the path as likely, not
// documented: it is one constant so a correction is a one-line change.
const PathWithdrawals = "/api/v1/payout/withdrawals"

// OpListWithdrawals names the list call in errors and metrics.
const OpListWithdrawals = "list withdrawals"

// MaxWithdrawalPageSize is the largest page asked for; Calypso documents no
// bound, and a small page keeps one call short.
const MaxWithdrawalPageSize = 100

// Withdrawal (item) states, as Calypso names them.
const (
	WithdrawalDraft      = "DRAFT"
	WithdrawalInProgress = "IN_PROGRESS"
	WithdrawalCompleted  = "COMPLETED"
	WithdrawalReplaced   = "REPLACED"
	WithdrawalFailed     = "FAILED"
)

// ListedWithdrawal is one withdrawal of a mass payout as the list call
// reports it. Calypso has echoed the recipient both as depositAddress and as
// clientAddress, so both are read; Address returns whichever is set.
type ListedWithdrawal struct {
	ID               ID                `json:"id"`
	WithdrawalID     ID                `json:"withdrawalId,omitempty"`
	Amount           Amount            `json:"amount"`
	Currency         string            `json:"currency,omitempty"`
	State            string            `json:"state"`
	DepositAddress   string            `json:"depositAddress,omitempty"`
	ClientAddress    string            `json:"clientAddress,omitempty"`
	Comment          string            `json:"comment,omitempty"`
	ExternalID       string            `json:"externalId,omitempty"`
	Hash             string            `json:"hash,omitempty"`
	WithdrawalErrors []WithdrawalError `json:"withdrawalErrors"`
}

// Address is the recipient address Calypso echoed, under either name.
func (w ListedWithdrawal) Address() string {
	if w.DepositAddress != "" {
		return w.DepositAddress
	}
	return w.ClientAddress
}

// Key is the withdrawal's id (the list's own id, else withdrawalId).
func (w ListedWithdrawal) Key() string {
	if w.ID != "" {
		return string(w.ID)
	}
	return string(w.WithdrawalID)
}

// FirstError is the first error that is not SUCCESS, if any.
func (w ListedWithdrawal) FirstError() (WithdrawalError, bool) {
	for _, e := range w.WithdrawalErrors {
		if e.Status != "SUCCESS" {
			return e, true
		}
	}
	return WithdrawalError{}, false
}

// SameAddress reports whether two address texts name the same recipient
// despite the ways Calypso has been seen to echo them: surrounding spaces
// and letter case (EIP-55 checksums, bech32). Only a fallback: payoutd
// matches withdrawals by the intent id it put in each row's comment.
func SameAddress(a, b string) bool {
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}

// WithdrawalPage is one page of a payout's withdrawals.
type WithdrawalPage struct {
	Page int `json:"page"`
	Size int `json:"size"`
	// Total is the number of pages, TotalElements the number of withdrawals.
	Total         int                `json:"total"`
	TotalElements int                `json:"totalElements"`
	Result        []ListedWithdrawal `json:"result"`
}

type withdrawalsQuery struct {
	DealID     string `json:"dealId"`
	PageNumber int    `json:"pageNumber"`
	Size       int    `json:"size"`
}

// MassPayoutWithdrawals returns page (0-based) of the withdrawals of mass
// payout payoutID, size per page (at most MaxWithdrawalPageSize), each with
// its own state and errors: the truth per recipient of a PARTIAL payout,
// which its error list alone does not give.
func (c *Client) MassPayoutWithdrawals(ctx context.Context, payoutID string, page, size int) (*WithdrawalPage, error) {
	if payoutID == "" {
		return nil, fmt.Errorf("calypso: %s: %w: empty payout id", OpListWithdrawals, ErrInvalidRequest)
	}
	if page < 0 || size <= 0 || size > MaxWithdrawalPageSize {
		return nil, fmt.Errorf("calypso: %s: %w: page %d of size %d", OpListWithdrawals, ErrInvalidRequest, page, size)
	}
	var out WithdrawalPage
	if err := c.call(ctx, OpListWithdrawals, PathWithdrawals, true, withdrawalsQuery{DealID: payoutID, PageNumber: page, Size: size}, &out); err != nil {
		return nil, err
	}
	if out.TotalElements < 0 || len(out.Result) > size {
		return nil, fmt.Errorf("calypso: %s: %w: %d withdrawals on a page of %d", OpListWithdrawals, ErrMalformedResponse, len(out.Result), size)
	}
	return &out, nil
}
