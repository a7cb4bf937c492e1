package main

import (
	"fmt"
	"slices"
	"strings"
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
		d := editDistance(word, strings.ToLower(c))
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

// editDistance counts the insertions, deletions, substitutions and swaps of
// two neighbouring letters that turn a into b (the optimal string alignment
// distance: "gte" is one swap from "get").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d[i][j] is the distance between ra[:i] and rb[:j].
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
