package client

import (
	"context"
	"net/http"
)

// Stats are the live counts of every pool that has keys, and their sum.
type Stats struct {
	// Pools are in the order of their names.
	Pools []PoolStats `json:"pools"`
	// Total sums the counts of every pool; its Pool is empty.
	Total PoolStats `json:"total"`
	// ExpiringWithinMinuteCapped tells that more keys expire within a
	// minute than the server counts (1,000): every ExpiringWithinMinute is
	// then a lower bound.
	ExpiringWithinMinuteCapped bool `json:"expiringWithinMinuteCapped"`
}

// PoolStats are the live counts of one pool.
type PoolStats struct {
	Pool string `json:"pool,omitempty"`
	// Total counts a key whose life has just ended until the server's
	// background job removes it.
	Total int64 `json:"total"`
	// Seats counts the seats of those keys (as many as keys when each has
	// one); Free and Blocked split the seats.
	Seats int64 `json:"seats"`
	Free  int64 `json:"free"`
	// Blocked counts the held seats (the wire name is kept).
	Blocked int64 `json:"blocked"`
	// ExpiringWithinMinute counts live keys whose life ends within a minute
	// unless they are kept alive (see Stats.ExpiringWithinMinuteCapped).
	ExpiringWithinMinute int64 `json:"expiringWithinMinute"`
}

// Stats returns the live counts of every pool (GET /stats). It needs the
// admin token when the server asks for tokens.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/stats"})
	if err != nil {
		return Stats{}, err
	}
	return decode[Stats](resp)
}
