package calypso

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// API paths, relative to Config.BaseURL.
const (
	PathAccount     = "/api/v1/account"
	PathExtendedFee = "/api/v1/tariff/extended-fee"
	PathMassCreate  = "/api/v1/payout/mass/create"
	PathMass        = "/api/v1/payout/mass"
	PathWithdrawal  = "/api/v1/payout/withdrawal"
)

// MassAddressesField is the JSON name of the recipient list in a create
// request. The seed guide says "massAddresses"; it is one constant so that a
// rename by Calypso is a one-line change.
const MassAddressesField = "massAddresses"

// Operation names, used in errors and logs.
const (
	OpAccount          = "account"
	OpExtendedFee      = "extended fee"
	OpCreateMassPayout = "create mass payout"
	OpGetMassPayout    = "get mass payout"
	OpGetWithdrawal    = "get withdrawal"
)

// AccountInfo is the merchant account and its balances.
type AccountInfo struct {
	Account  string    `json:"account"`
	Name     string    `json:"name,omitempty"`
	OwnerID  string    `json:"ownerId,omitempty"`
	Balances []Balance `json:"balances"`
}

// Balance is the balance of one currency.
type Balance struct {
	Currency string `json:"currency"`
	Amount   Amount `json:"amount"`
}

// Balance returns the balance of currency (zero and false when absent).
func (a *AccountInfo) Balance(currency string) (Amount, bool) {
	for _, b := range a.Balances {
		if b.Currency == currency {
			return b.Amount, true
		}
	}
	return Amount{}, false
}

// Account returns the configured account and its balances (POST account).
func (c *Client) Account(ctx context.Context) (*AccountInfo, error) {
	var out AccountInfo
	if err := c.call(ctx, OpAccount, PathAccount, true, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// OpType is the operation a fee is quoted for.
type OpType string

// Operation types.
const (
	OpTypeWithdrawal OpType = "WITHDRAWAL"
	OpTypeInvoice    OpType = "INVOICE"
)

// FeeType says who bears which part of a fee.
type FeeType string

// Fee types: SERVICE — the recipient bears all fees; FIX — only the fixed
// part; PERCENT — only the percentage part.
const (
	FeeService FeeType = "SERVICE"
	FeeFix     FeeType = "FIX"
	FeePercent FeeType = "PERCENT"
)

// FeeQuery asks for the fee of one amount.
type FeeQuery struct {
	BaseAmount Amount  `json:"baseAmount"`
	Currency   string  `json:"currency"`
	OpType     OpType  `json:"opType"`
	FeeType    FeeType `json:"feeType,omitempty"`
}

// FeeQuote is Calypso's answer for one FeeQuery.
type FeeQuote struct {
	Amount   Amount `json:"amount"`
	Currency string `json:"currency"`
	OpType   OpType `json:"opType"`
	// FeeReceiver is the fee taken out of the amount (the recipient pays).
	FeeReceiver FeePart `json:"feeReceiver"`
	// FeeSender is the fee on top of the amount: Amount is what leaves the
	// merchant's balance (amount + fee).
	FeeSender FeePart `json:"feeSender"`
}

// FeePart is one side of a fee quote.
type FeePart struct {
	Amount     Amount `json:"amount"`
	Fee        Amount `json:"fee"`
	FixedFee   Amount `json:"fixedFee,omitzero"`
	PercentFee Amount `json:"percentFee,omitzero"`
}

type feeRequest struct {
	Items []FeeQuery `json:"items"`
}

type feeResponse struct {
	Items []FeeQuote `json:"items"`
}

// ExtendedFee pre-calculates fees (POST tariff/extended-fee), one quote per
// query, in order. As in Calypso's example the envelope carries no account.
func (c *Client) ExtendedFee(ctx context.Context, queries []FeeQuery) ([]FeeQuote, error) {
	if len(queries) == 0 {
		return nil, fmt.Errorf("calypso: %s: %w: no queries", OpExtendedFee, ErrInvalidRequest)
	}
	var out feeResponse
	if err := c.call(ctx, OpExtendedFee, PathExtendedFee, false, feeRequest{Items: queries}, &out); err != nil {
		return nil, err
	}
	if len(out.Items) != len(queries) {
		return nil, fmt.Errorf("calypso: %s: %w: %d quotes for %d queries", OpExtendedFee, ErrMalformedResponse, len(out.Items), len(queries))
	}
	return out.Items, nil
}

// MassPayoutRequest creates one mass payout: one currency, many recipients.
type MassPayoutRequest struct {
	Currency string
	Name     string
	Comment  string
	Items    []MassPayoutItem
	// ExecutionDate schedules the payout; nil executes it at once. Sent as
	// UTC ISO-8601 with milliseconds and Z.
	ExecutionDate *time.Time
	// IdempotencyKey is required, a UUID. Persist it before calling, and
	// reuse it on every retry of the same logical payout.
	IdempotencyKey string
	ExternalID     string
}

// MassPayoutItem is one recipient.
type MassPayoutItem struct {
	DepositAddress string `json:"depositAddress"`
	Amount         Amount `json:"amount"`
	Comment        string `json:"comment,omitempty"`
}

// MassPayout is a mass payout as Calypso reports it. Unknown fields are
// ignored, as Calypso requires of clients.
type MassPayout struct {
	ID                    ID           `json:"id"`
	IdempotencyKey        string       `json:"idempotencyKey"`
	CompanyID             string       `json:"companyId,omitempty"`
	Account               string       `json:"account"`
	State                 State        `json:"state"`
	Comment               string       `json:"comment,omitempty"`
	Name                  string       `json:"name,omitempty"`
	Currency              string       `json:"currency"`
	TotalWithdrawalAmount Amount       `json:"totalWithdrawalAmount"`
	TotalFee              Amount       `json:"totalFee"`
	TotalFeePercentage    Amount       `json:"totalFeePercentage"`
	CreatedDate           Time         `json:"createdDate,omitzero"`
	ExecutionDate         Time         `json:"executionDate,omitzero"`
	Errors                PayoutErrors `json:"errors"`
	ExternalID            string       `json:"externalId,omitempty"`
}

// PayoutErrors groups the errors of a payout's withdrawals.
type PayoutErrors struct {
	WithdrawalErrors []WithdrawalErrors `json:"withdrawalErrors"`
}

// WithdrawalErrors are the errors of one withdrawal.
type WithdrawalErrors struct {
	WithdrawalID ID                `json:"withdrawalId"`
	Errors       []WithdrawalError `json:"errors"`
}

// WithdrawalError is one validation or processing error of a withdrawal.
// Status values seen: SUCCESS, NO_PERMISSION, NO_BALANCE, NOT_ENOUGH_FUNDS,
// NOT_ENOUGH_FUNDS_FOR_COMMISSION.
type WithdrawalError struct {
	ID            ID     `json:"id"`
	Status        string `json:"status"`
	ErrorResolved bool   `json:"errorResolved"`
	ErrorMessage  string `json:"errorMessage,omitempty"`
}

// CreateMassPayout creates a mass payout (POST payout/mass/create).
//
// The request is checked locally first (currency rule, item count, decimals,
// positive amounts, UUID key) and refused with ErrInvalidRequest. Retries use
// the same idempotency key, so at most one payout is created; when an earlier
// attempt succeeded but its answer was lost the result is
// ErrIdempotencyKeyExists, and the caller looks the payout up with
// MassPayoutByIdempotencyKey.
func (c *Client) CreateMassPayout(ctx context.Context, r MassPayoutRequest) (*MassPayout, error) {
	if err := c.checkCreate(r); err != nil {
		return nil, err
	}
	// A map, not a struct, so the list key can be the MassAddressesField
	// constant; encoding/json sorts the keys, and we sign what we send.
	p := map[string]any{
		"currency":         r.Currency,
		"name":             r.Name,
		"idempotencyKey":   r.IdempotencyKey,
		MassAddressesField: r.Items,
	}
	if r.Comment != "" {
		p["comment"] = r.Comment
	}
	if r.ExternalID != "" {
		p["externalId"] = r.ExternalID
	}
	if r.ExecutionDate != nil {
		p["executionDate"] = FormatTime(*r.ExecutionDate)
	}
	var out MassPayout
	if err := c.call(ctx, OpCreateMassPayout, PathMassCreate, true, p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) checkCreate(r MassPayoutRequest) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("calypso: %s: %w: %s", OpCreateMassPayout, ErrInvalidRequest, fmt.Sprintf(format, args...))
	}
	if r.Currency == "" {
		return bad("Currency is required")
	}
	rule, ok := c.cfg.Rule(r.Currency)
	if !ok {
		return bad("currency %q has no rule in Config.Currencies", r.Currency)
	}
	if r.Name == "" {
		return bad("Name is required")
	}
	if _, err := uuid.Parse(r.IdempotencyKey); err != nil {
		return bad("IdempotencyKey must be a UUID, got %q", truncate(r.IdempotencyKey, 64))
	}
	if len(r.Items) == 0 {
		return bad("no items")
	}
	if len(r.Items) > rule.MaxItems {
		return bad("%d items exceed the %s limit of %d per mass payout", len(r.Items), r.Currency, rule.MaxItems)
	}
	for i, it := range r.Items {
		if it.DepositAddress == "" {
			return bad("Items[%d].DepositAddress is required", i)
		}
		if it.Amount.Sign() <= 0 {
			return bad("Items[%d].Amount must be positive, got %s", i, it.Amount)
		}
		if !it.Amount.FitsDecimals(rule.Decimals) {
			return bad("Items[%d].Amount %s has more than %d decimals for %s", i, it.Amount, rule.Decimals, r.Currency)
		}
	}
	return nil
}

type byIDOrKey struct {
	ID             string `json:"id,omitempty"`
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
}

// MassPayout returns the mass payout with Calypso id id (POST payout/mass).
// A missing payout gives an *APIError matching ErrNotFound.
func (c *Client) MassPayout(ctx context.Context, id string) (*MassPayout, error) {
	if id == "" {
		return nil, fmt.Errorf("calypso: %s: %w: empty id", OpGetMassPayout, ErrInvalidRequest)
	}
	return c.getMass(ctx, byIDOrKey{ID: id})
}

// MassPayoutByIdempotencyKey returns the mass payout created with key.
func (c *Client) MassPayoutByIdempotencyKey(ctx context.Context, key string) (*MassPayout, error) {
	if key == "" {
		return nil, fmt.Errorf("calypso: %s: %w: empty idempotency key", OpGetMassPayout, ErrInvalidRequest)
	}
	return c.getMass(ctx, byIDOrKey{IdempotencyKey: key})
}

func (c *Client) getMass(ctx context.Context, q byIDOrKey) (*MassPayout, error) {
	var out MassPayout
	if err := c.call(ctx, OpGetMassPayout, PathMass, true, q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Withdrawal is one transfer inside a mass payout.
type Withdrawal struct {
	ID               ID                `json:"id"`
	Account          string            `json:"account"`
	Amount           Amount            `json:"amount"`
	Currency         string            `json:"currency"`
	State            string            `json:"state"`
	CalypsoFee       Amount            `json:"calypsoFee"`
	TransactionHash  string            `json:"transactionHash,omitempty"`
	DepositAddress   string            `json:"depositAddress"`
	Comment          string            `json:"comment,omitempty"`
	CreatedDate      Time              `json:"createdDate,omitzero"`
	WithdrawalErrors []WithdrawalError `json:"withdrawalErrors"`
}

// Withdrawal returns one withdrawal (POST payout/withdrawal), e.g. to map a
// PARTIAL payout's withdrawalErrors back to recipients. The payload key is
// Config.WithdrawalIDField, because the docs disagree on it.
func (c *Client) Withdrawal(ctx context.Context, id string) (*Withdrawal, error) {
	if id == "" {
		return nil, fmt.Errorf("calypso: %s: %w: empty id", OpGetWithdrawal, ErrInvalidRequest)
	}
	var out Withdrawal
	if err := c.call(ctx, OpGetWithdrawal, PathWithdrawal, true, map[string]string{c.cfg.WithdrawalIDField: id}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
