// Package migrations holds the goose migrations of the database schema,
// embedded so that the binary can apply them at start-up.
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
