package store

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStatementName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ sql, name, operation string }{
		{"-- name: KeyClaim :many\n-- Claims keys.\nWITH claimed AS (SELECT 1) SELECT 1", "KeyClaim", "WITH"},
		{"-- name: KeyGet :one\nSELECT k.id FROM keys AS k WHERE k.id = $1", "KeyGet", "SELECT"},
		{"select 1", "SELECT", "SELECT"},
		{"  LISTEN key_freed", "LISTEN", "LISTEN"},
		{"", "query", ""},
	} {
		name, operation := statementName(tc.sql)
		require.Equal(t, tc.name, name, tc.sql)
		require.Equal(t, tc.operation, operation, tc.sql)
	}
}
