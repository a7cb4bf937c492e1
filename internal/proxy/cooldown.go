package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Cooldown is how long a key cools down after an answer of 429 or 503
// with these headers: the answer's Retry-After, in seconds or as an HTTP
// date, at most ceiling; fallback when the answer has no Retry-After that
// can be read. A date is reckoned from the answer's own Date when it has
// one, so that the upstream's clock and this machine's need not agree. A
// Retry-After of 0, or a date already past, is no cooldown.
func Cooldown(h http.Header, now time.Time, fallback, ceiling time.Duration) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return fallback
	}
	if seconds, err := strconv.ParseInt(v, 10, 64); err == nil {
		switch {
		case seconds < 0:
			return fallback
		case seconds > int64(ceiling/time.Second):
			// Before multiplying: a huge number would overflow.
			return ceiling
		}
		return min(time.Duration(seconds)*time.Second, ceiling)
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return fallback
	}
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		now = date
	}
	return min(max(at.Sub(now), 0), ceiling)
}
