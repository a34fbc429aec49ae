package pipeline

import (
	"fmt"

	"github.com/payoutd/payoutd/calypso"
)

// Accounts maps each merchant account to the Calypso client that acts on it
// (a Calypso client is bound to one account).
type Accounts map[string]*calypso.Client

// client returns the account's client, or an error naming the account.
func (a Accounts) client(account string) (*calypso.Client, error) {
	c, ok := a[account]
	if !ok {
		return nil, fmt.Errorf("no Calypso client configured for account %q", account)
	}
	return c, nil
}
