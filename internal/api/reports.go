package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/reports"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
)

// Headers of every answer read from history (reports and the dashboard's
// charts): where it was read, primary or standby, and how many seconds
// that was behind the primary.
const (
	headerReportSource = "X-Report-Source"
	headerReplayLag    = "X-Replay-Lag-Seconds"
)

// freshness is the same in the body, embedded in the bodies of the
// dashboard's charts (the report documents carry their own).
type freshness struct {
	Source           string  `json:"source"`
	ReplayLagSeconds float64 `json:"replayLagSeconds"`
}

// setFreshness sets the headers and returns the body's members.
func setFreshness(w http.ResponseWriter, f store.Freshness) freshness {
	w.Header().Set(headerReportSource, f.Source)
	w.Header().Set(headerReplayLag, strconv.FormatFloat(f.ReplayLag.Seconds(), 'f', 3, 64))
	return freshness{Source: f.Source, ReplayLagSeconds: f.ReplayLag.Seconds()}
}

// listReports answers the catalogue of reports.
func (a *API) listReports(w http.ResponseWriter, r *http.Request) error {
	type entry struct {
		Name    string   `json:"name"`
		Path    string   `json:"path"`
		Source  string   `json:"source"`
		Summary string   `json:"summary"`
		Columns []string `json:"columns"`
	}
	list := make([]entry, len(reports.All))
	for i, rep := range reports.All {
		cols := make([]string, len(rep.Columns))
		for j, col := range rep.Columns {
			cols[j] = col.JSON
		}
		list[i] = entry{Name: rep.Name, Path: "/reports/" + rep.Name, Source: rep.Source, Summary: rep.Summary, Columns: cols}
	}
	writeJSON(w, http.StatusOK, struct {
		Reports    []entry `json:"reports"`
		Parameters string  `json:"parameters"`
	}{list, "from, to: RFC 3339 times, the range [from, to), default the last 24 hours, at most 31 days; " +
		"pool: one pool, default every pool; limit (leases only): 1.." + strconv.Itoa(reports.MaxLimit) +
		", default " + strconv.Itoa(reports.DefaultLimit)})
	return nil
}

// report serves the named report of the catalogue.
func (a *API) report(name string) func(http.ResponseWriter, *http.Request) error {
	rep, ok := reports.Find(name)
	if !ok {
		panic("api: no report named " + name)
	}
	return func(w http.ResponseWriter, r *http.Request) error {
		params, err := reportParams(r, time.Now())
		if err != nil {
			return err
		}
		// The range is checked before anything is read, the standby's lag
		// included.
		if err := params.Validate(); err != nil {
			return err
		}
		src, err := a.store.Reports(r.Context())
		if err != nil {
			return err
		}
		table, err := rep.Run(r.Context(), src, params)
		if err != nil {
			return err
		}
		setFreshness(w, table.Freshness)
		writeJSON(w, http.StatusOK, reports.NewDocument(rep, params, table))
		return nil
	}
}

// reportQuery is what the named report takes: from, to, pool and, for the
// leases report, limit. Any other parameter is refused: a misspelt from or
// to would otherwise quietly give the default range.
func reportQuery(name string) query {
	rep, ok := reports.Find(name)
	if !ok {
		panic("api: no report named " + name)
	}
	if rep.PerLease {
		return takes("from", "to", "pool", "limit")
	}
	return takes("from", "to", "pool")
}

// reportParams reads what reportQuery lets through.
func reportParams(r *http.Request, now time.Time) (reports.Params, error) {
	query := r.URL.Query()
	var err error
	p := reports.DefaultParams(now)
	if query.Has("to") {
		if p.To, err = timeParam(query.Get("to"), "to"); err != nil {
			return reports.Params{}, err
		}
		p.From = p.To.Add(-reports.DefaultRange)
	}
	if query.Has("from") {
		if p.From, err = timeParam(query.Get("from"), "from"); err != nil {
			return reports.Params{}, err
		}
	}
	if query.Has("pool") {
		if p.Pool, err = poolParam(r, nil); err != nil {
			return reports.Params{}, err
		}
	}
	if query.Has("limit") {
		raw := query.Get("limit")
		if p.Limit, err = strconv.Atoi(raw); err != nil || p.Limit < 1 {
			return reports.Params{}, invalid(errInvalidParameter, "limit must be a whole number from 1 to %d, got %q", reports.MaxLimit, raw)
		}
	}
	return p, nil
}
