package client

import (
	"context"
	"time"
)

// The former names of the calls that claim a key, kept so that code written
// against them still compiles.

// AssignKey claims a key like ClaimKey.
//
// Deprecated: use ClaimKey.
func (c *Client) AssignKey(ctx context.Context, pool string, wait time.Duration, opts ...ClaimOption) (Key, error) {
	return c.ClaimKey(ctx, pool, wait, opts...)
}

// Acquire claims a key and keeps its lease alive like Claim.
//
// Deprecated: use Claim.
func (c *Client) Acquire(ctx context.Context, pool string, opts ...ClaimOption) (*Lease, error) {
	return c.Claim(ctx, pool, opts...)
}

// AssignOption adjusts a claim like ClaimOption.
//
// Deprecated: use ClaimOption.
type AssignOption = ClaimOption
