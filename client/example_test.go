package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

// Claim a key, use it while the lease keeps itself alive, release it.
// (serverURL is the server's address, such as "http://127.0.0.1:8080".)
func Example() {
	ctx := context.Background()
	c, err := client.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	// An operator puts keys into the pool.
	if _, err := c.CreateKeys(ctx, "example", 2); err != nil {
		log.Fatal(err)
	}

	// Wait up to ten seconds for a free key of the pool.
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	lease, err := c.Claim(waitCtx, "example")
	cancel() // waitCtx bounds the wait only, not the lease
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		if err := lease.Release(ctx); err != nil {
			log.Print("release: ", err)
		}
	}()

	fmt.Println("holding a key of pool", lease.Key().Pool)
	select {
	case <-lease.Lost():
		// The key may be someone else's now: stop using it.
		log.Print("lease lost: ", lease.Err())
	default:
		// Work with lease.ID(); the lease stays alive meanwhile.
	}
	// Output: holding a key of pool example
}

// Plain calls: each is one request to the API.
func ExampleClient_ClaimKey() {
	ctx := context.Background()
	c, err := client.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.CreateKey(ctx, "plain"); err != nil {
		log.Fatal(err)
	}
	key, err := c.ClaimKey(ctx, "plain", 0)
	if err != nil {
		log.Fatal(err)
	}
	// Keep-alive and release present the lease token.
	if _, err := c.KeepAlive(ctx, key.ID, key.LeaseToken); err != nil {
		log.Fatal(err)
	}
	if _, err := c.ReleaseKey(ctx, key.ID, key.LeaseToken); err != nil {
		log.Fatal(err)
	}
	// Once released, the token is stale: it no longer keeps the key.
	_, err = c.KeepAlive(ctx, key.ID, key.LeaseToken)
	fmt.Println(errors.Is(err, client.ErrLeaseLost))

	// Every key of the pool is held now: none is available.
	if _, err := c.ClaimKey(ctx, "plain", 0); err != nil {
		log.Fatal(err)
	}
	_, err = c.ClaimKey(ctx, "plain", 0)
	fmt.Println(errors.Is(err, client.ErrNoKeyAvailable))
	// A pool without keys is no pool at all: a misspelt name.
	_, err = c.ClaimKey(ctx, "plian", 0)
	fmt.Println(errors.Is(err, client.ErrUnknownPool))
	// Output:
	// true
	// true
	// true
}

// A pool's policy: keys that stay until deleted, two-minute leases, and
// releases that must name their lease.
func ExampleClient_PutPool() {
	ctx := context.Background()
	c, err := client.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	pool, err := c.PutPool(ctx, "policed", client.Policy{
		KeysStay:          true,
		LeaseTTL:          new(2 * time.Minute),
		RequireLeaseToken: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("keys stay:", pool.Effective.KeyTTL == nil, "lease:", pool.Effective.LeaseTTL)

	if _, err := c.CreateKey(ctx, "policed"); err != nil {
		log.Fatal(err)
	}
	key, err := c.ClaimKey(ctx, "policed", 0)
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.ReleaseKey(ctx, key.ID, "")
	fmt.Println(errors.Is(err, client.ErrLeaseTokenRequired))
	if _, err := c.ReleaseKey(ctx, key.ID, key.LeaseToken); err != nil {
		log.Fatal(err)
	}
	// Output:
	// keys stay: true lease: 2m0s
	// true
}
