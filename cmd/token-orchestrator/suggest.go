package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tokenorchestrator/tokenorchestrator/internal/spelling"
)

// didYouMean is the line that follows "unknown command" on a typo: the
// candidates closest to word, or "" when none is close enough to be what
// the user meant.
func didYouMean(word string, candidates []string) string {
	near := suggest(word, candidates)
	switch len(near) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("Did you mean %q?\n", near[0])
	default:
		quoted := make([]string, len(near))
		for i, c := range near {
			quoted[i] = fmt.Sprintf("%q", c)
		}
		return "Did you mean one of " + strings.Join(quoted, ", ") + "?\n"
	}
}

// suggest returns the candidates that word is a typo of, the closest
// first: those within a small edit distance (one edit for short words,
// two from five letters on, so that "get" does not suggest "list"), and
// those that word starts (an abbreviation such as "keep" for "keepalive").
func suggest(word string, candidates []string) []string {
	word = strings.ToLower(word)
	allowed := 1
	if len(word) >= 5 {
		allowed = 2
	}
	type match struct {
		name     string
		distance int
	}
	var matches []match
	for _, c := range candidates {
		d := spelling.Distance(word, strings.ToLower(c))
		switch {
		case d == 0:
			continue
		case d <= allowed:
			matches = append(matches, match{c, d})
		case len(word) >= 2 && strings.HasPrefix(strings.ToLower(c), word):
			matches = append(matches, match{c, len(c) - len(word)})
		}
	}
	slices.SortStableFunc(matches, func(a, b match) int { return a.distance - b.distance })
	names := make([]string, len(matches))
	for i, m := range matches {
		names[i] = m.name
	}
	return names
}
