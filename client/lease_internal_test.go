package client

import (
	"testing"
	"time"
)

// The lease's length is read from the server's own times, whatever the
// client's clock says.
func TestLeaseDurationComesFromTheServersTimes(t *testing.T) {
	t.Parallel()
	at := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	for _, tc := range []struct {
		name string
		key  Key
		want time.Duration
	}{
		{"just claimed", Key{BlockedAt: at("2030-01-01T10:00:00.000Z"), LeaseExpiresAt: at("2030-01-01T10:01:00.000Z")}, time.Minute},
		{"kept alive since", Key{
			BlockedAt: at("2030-01-01T10:00:00.000Z"), LastKeepAliveAt: at("2030-01-01T10:00:40.250Z"),
			LeaseExpiresAt: at("2030-01-01T10:00:40.750Z"),
		}, 500 * time.Millisecond},
		{"kept alive before the claim", Key{
			LastKeepAliveAt: at("2030-01-01T09:00:00.000Z"), BlockedAt: at("2030-01-01T10:00:00.000Z"),
			LeaseExpiresAt: at("2030-01-01T10:00:30.000Z"),
		}, 30 * time.Second},
		{"free", Key{CreatedAt: *at("2030-01-01T10:00:00.000Z")}, 0},
		{"no start", Key{LeaseExpiresAt: at("2030-01-01T10:00:30.000Z")}, 0},
	} {
		if got := leaseDuration(tc.key); got != tc.want {
			t.Errorf("%s: leaseDuration = %v, want %v", tc.name, got, tc.want)
		}
	}
}
