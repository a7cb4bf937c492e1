package spelling_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/spelling"
)

func TestDistance(t *testing.T) {
	t.Parallel()
	require.Equal(t, 0, spelling.Distance("keys", "keys"))
	require.Equal(t, 1, spelling.Distance("gte", "get"), "a swap is one edit")
	require.Equal(t, 3, spelling.Distance("", "get"))
	require.Equal(t, 1, spelling.Distance("status", "stauts"))
	require.Equal(t, 2, spelling.Distance("status", "statuses"))
	require.Equal(t, 1, spelling.Distance("coldown", "cooldown"))
	require.Equal(t, 1, spelling.Distance("pöol", "pool"), "a letter is a rune, not a byte")
}
