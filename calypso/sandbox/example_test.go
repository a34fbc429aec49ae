package sandbox_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
)

// A test points a real client at the sandbox through httptest.
func ExampleNew() {
	sb := sandbox.New(sandbox.Config{
		Accounts: map[string]sandbox.Account{"0xacc": {
			APIKey: "pub", APISecret: "secret",
			Balances: map[string]calypso.Amount{"USDT_TRX": calypso.MustParseAmount("100")},
		}},
		Tariff:    map[string]sandbox.Fee{"USDT_TRX": {Fixed: calypso.MustParseAmount("1")}},
		TimeScale: 0.001, // seconds become milliseconds
	})
	defer sb.Close()
	srv := httptest.NewServer(sb)
	defer srv.Close()

	client, err := calypso.NewClient(calypso.Config{BaseURL: srv.URL, Account: "0xacc", APIKey: "pub", APISecret: "secret"})
	if err != nil {
		panic(err)
	}
	p, err := client.CreateMassPayout(context.Background(), calypso.MassPayoutRequest{
		Currency: "USDT_TRX", Name: "payroll", IdempotencyKey: "123e4567-e89b-12d3-a456-426614174000",
		Items: []calypso.MassPayoutItem{{DepositAddress: "TXYZ", Amount: calypso.MustParseAmount("10.5")}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(p.State, p.TotalWithdrawalAmount, p.TotalFee, sb.Balance("0xacc", "USDT_TRX"))
	// Output: CREATION_IN_PROGRESS 10.5 1 88.5
}
