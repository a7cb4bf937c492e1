package lease_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/lease"
)

func ptr[T any](v T) *T { return &v }

// A key is held under the lease it was read for; read as a whole, a key of
// several seats is held when every seat is.
func TestHeld(t *testing.T) {
	t.Parallel()
	require.False(t, lease.Key{Seats: 1}.Held())
	require.True(t, lease.Key{Seats: 1, LeaseToken: ptr(int64(7))}.Held())
	require.False(t, lease.Key{Seats: 3, SeatsHeld: ptr(2)}.Held())
	require.True(t, lease.Key{Seats: 3, SeatsHeld: ptr(3)}.Held())
	require.True(t, lease.Key{Seats: 3, SeatsHeld: ptr(1), LeaseToken: ptr(int64(7))}.Held())
}

// Labels are name=value within their character sets and lengths; names of
// keys within theirs. Every refusal wraps its error and quotes a long input
// cut short.
func TestLabelAndNameRules(t *testing.T) {
	t.Parallel()
	label, err := lease.ParseLabel("tier=paid")
	require.NoError(t, err)
	require.Equal(t, "tier=paid", label)
	for _, bad := range []string{"tier", "=paid", "tier=", "ti er=paid", "tier=pa id", strings.Repeat("n", lease.MaxLabelName+1) + "=v",
		"n=" + strings.Repeat("v", lease.MaxLabelValue+1)} {
		_, err := lease.ParseLabel(bad)
		require.ErrorIs(t, err, lease.ErrInvalidLabel, bad)
	}
	require.NoError(t, lease.ValidateLabel(strings.Repeat("n", lease.MaxLabelName), strings.Repeat("v", lease.MaxLabelValue)))
	_, err = lease.ParseLabel(strings.Repeat("x", 100))
	require.EqualError(t, err, `invalid label: "`+strings.Repeat("x", 64)+`…" is not name=value`)

	require.NoError(t, lease.ValidateName("gpt-4o:eu@team+1"))
	for _, bad := range []string{"", "a b", strings.Repeat("n", 129)} {
		require.ErrorIs(t, lease.ValidateName(bad), lease.ErrInvalidName, bad)
	}
}

// Only the last four characters of a secret of 12 or more are shown.
func TestSecretHint(t *testing.T) {
	t.Parallel()
	require.Equal(t, "", lease.SecretHint("sk-12345678"))
	require.Equal(t, "5678", lease.SecretHint("sk-012345678"))
	require.Equal(t, "äöüß", lease.SecretHint("sk-01234äöüß"))
}

// A policy's values are checked against their bounds, every fault named;
// its effective values fill in the server's where it sets nothing.
func TestPolicy(t *testing.T) {
	t.Parallel()
	require.NoError(t, lease.Policy{}.Validate())
	err := lease.Policy{LeaseTTL: ptr(lease.MaxPolicyLeaseTTL + 1), Seats: ptr(0)}.Validate()
	require.ErrorIs(t, err, lease.ErrInvalidPolicy)
	require.ErrorContains(t, err, "leaseTTL must be between")
	require.ErrorContains(t, err, "seats must be between 1 and 1000, got 0")
	require.ErrorIs(t, lease.Policy{KeysStay: true, KeyTTL: ptr(time.Hour)}.Validate(), lease.ErrInvalidPolicy)

	e := lease.Policy{}.Effective(5*time.Minute, time.Minute)
	require.Equal(t, lease.Effective{KeyTTL: ptr(5 * time.Minute), LeaseTTL: time.Minute, MaxWait: lease.MaxWait, Seats: 1}, e)
	e = lease.Policy{KeysStay: true, LeaseTTL: ptr(time.Hour), MaxLeaseTTL: ptr(10 * time.Minute), MaxWait: ptr(time.Second), Seats: ptr(4)}.
		Effective(5*time.Minute, time.Minute)
	require.Equal(t, lease.Effective{LeaseTTL: 10 * time.Minute, MaxLeaseTTL: ptr(10 * time.Minute), MaxWait: time.Second, Seats: 4}, e)
}

// ErrSeatLeaseRequired is a case of ErrLeaseTokenRequired.
func TestSeatLeaseRequiredIsLeaseTokenRequired(t *testing.T) {
	t.Parallel()
	require.ErrorIs(t, lease.ErrSeatLeaseRequired, lease.ErrLeaseTokenRequired)
}
