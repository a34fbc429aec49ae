package sandbox

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"

	"github.com/payoutd/payoutd/calypso"
)

// WithdrawalEcho says how the sandbox echoes a withdrawal's recipient in its
// answers (get one withdrawal, list a payout's withdrawals), as Calypso has
// been seen to: in another letter case, with spaces around it, under
// clientAddress instead of depositAddress, or without the row's comment.
// The zero value echoes what was sent.
type WithdrawalEcho struct {
	Case          string // "", "lower" or "upper"
	Pad           bool   // surround the address with spaces
	ClientAddress bool   // under clientAddress, depositAddress left out
	DropComment   bool   // leave the row's comment out
	// Address, when set, replaces the address entirely (a recipient
	// payoutd cannot recognise).
	Address string
}

func (e WithdrawalEcho) address(a string) string {
	if e.Address != "" {
		a = e.Address
	}
	switch e.Case {
	case "lower":
		a = strings.ToLower(a)
	case "upper":
		a = strings.ToUpper(a)
	}
	if e.Pad {
		a = "  " + a + " "
	}
	return a
}

// echoes holds each sandbox's WithdrawalEcho; kept beside the Sandbox type
// rather than in it so this option stays self-contained.
var echoes sync.Map // *Sandbox → WithdrawalEcho

// EchoWithdrawals sets how withdrawals are echoed from now on.
func (s *Sandbox) EchoWithdrawals(e WithdrawalEcho) { echoes.Store(s, e) }

func (s *Sandbox) echo() WithdrawalEcho {
	if e, ok := echoes.Load(s); ok {
		return e.(WithdrawalEcho)
	}
	return WithdrawalEcho{}
}

// echoWithdrawal renders one withdrawal as the echo option says.
func (s *Sandbox) echoWithdrawal(w calypso.Withdrawal) any {
	e := s.echo()
	if e == (WithdrawalEcho{}) {
		return w
	}
	b, _ := json.Marshal(w)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	addr := e.address(w.DepositAddress)
	if e.ClientAddress {
		delete(m, "depositAddress")
		m["clientAddress"] = addr
	} else {
		m["depositAddress"] = addr
	}
	if e.DropComment {
		delete(m, "comment")
	}
	return m
}

// withdrawalRoutes adds the list call (calypso.PathWithdrawals).
func (s *Sandbox) withdrawalRoutes() {
	s.mux.HandleFunc("POST "+calypso.PathWithdrawals, s.api(calypso.PathWithdrawals, s.handleWithdrawals))
}

// handleWithdrawals lists a payout's withdrawals, page by page, each with
// its own state and errors.
func (s *Sandbox) handleWithdrawals(req *request) (any, *apiError) {
	var q struct {
		DealID     calypso.ID `json:"dealId"`
		PageNumber int        `json:"pageNumber"`
		Size       int        `json:"size"`
		StateNames []string   `json:"stateNames"`
	}
	if req.payload == nil {
		return nil, errBadRequest("payload is required")
	}
	if err := strictDecode(req.payload, &q); err != nil {
		return nil, errBadRequest("invalid payload: %v", err)
	}
	if q.DealID == "" {
		return nil, errBadRequest("dealId is required")
	}
	if q.PageNumber < 0 || q.Size <= 0 || q.Size > calypso.MaxWithdrawalPageSize {
		return nil, errBadRequest("pageNumber must be >= 0 and size in 1..%d", calypso.MaxWithdrawalPageSize)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.payouts[string(q.DealID)]
	if p == nil || p.account != req.acc.id {
		return nil, &apiError{http.StatusBadRequest, calypso.CodeNotFound, "Requested object not found"}
	}
	var all []*item
	for _, it := range p.items {
		if len(q.StateNames) == 0 || contains(q.StateNames, it.state) {
			all = append(all, it)
		}
	}
	e := s.echo()
	page := calypso.WithdrawalPage{Page: q.PageNumber, Size: q.Size, TotalElements: len(all),
		Total: (len(all) + q.Size - 1) / q.Size, Result: []calypso.ListedWithdrawal{}}
	for i := q.PageNumber * q.Size; i < len(all) && i < (q.PageNumber+1)*q.Size; i++ {
		it := all[i]
		w := calypso.ListedWithdrawal{ID: calypso.ID(it.id), Amount: it.amount, Currency: p.currency, State: it.state,
			Comment: it.comment, Hash: it.hash, WithdrawalErrors: append([]calypso.WithdrawalError{}, it.errs...)}
		if addr := e.address(it.address); e.ClientAddress {
			w.ClientAddress = addr
		} else {
			w.DepositAddress = addr
		}
		if e.DropComment {
			w.Comment = ""
		}
		page.Result = append(page.Result, w)
	}
	return page, nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
