package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// BenchmarkClaimRelease measures one claim and one release of a key, in
// parallel (-cpu sets the clients), on a pool of 10,000 keys.
func BenchmarkClaimRelease(b *testing.B) {
	pool := testdbPool(b)
	s := store.New(pool, store.Config{KeyTTL: 1 << 62, LeaseTTL: 1 << 62})
	_, err := s.Create(b.Context(), "bench", 10000)
	require.NoError(b, err)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k, err := s.Claim(b.Context(), "bench")
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := s.Release(b.Context(), k.ID, k.LeaseToken); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
