// Package loadgen drives running servers over HTTP with concurrent workers
// doing claim → (keep-alive) → release cycles, and checks on every claim
// that no other worker holds the key: a double claim fails the run.
package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes a run.
type Config struct {
	// Servers are base URLs; worker w sends its i-th cycle to server (w+i)
	// modulo their number, so every worker talks to every replica.
	Servers []string
	// Pool to claim from.
	Pool string
	// Clients is the number of concurrent workers.
	Clients int
	// Duration of the run.
	Duration time.Duration
	// KeepAlive sends a keep-alive with the lease token between claim and
	// release.
	KeepAlive bool
	// Window, when positive, also splits the run into consecutive windows of
	// this length from its start and sums each up in Result.Windows, so that
	// a change during the run shows when it happened. Zero keeps totals only.
	Window time.Duration
}

// Result sums a run up.
type Result struct {
	Cycles int64
	// Started is when the workers began; Windows count from it.
	Started time.Time
	Elapsed time.Duration
	// Empty counts claims answered 404 (no free key); they are retried.
	Empty int64
	// DoubleClaims counts claims of a key another worker held.
	DoubleClaims int64
	// ClaimLatencies of every successful claim, sorted.
	ClaimLatencies []time.Duration
	// Windows of Config.Window each, in order, when that was set.
	Windows []Window

	// cycles records when each cycle finished, for the windows.
	cycles []cycle
}

// CyclesPerSecond is the throughput of the run.
func (r Result) CyclesPerSecond() float64 { return float64(r.Cycles) / r.Elapsed.Seconds() }

// ClaimPercentile returns the p-th percentile (0..100) of claim latency.
func (r Result) ClaimPercentile(p float64) time.Duration { return percentile(r.ClaimLatencies, p) }

// Window sums up the cycles that finished within one window of a run.
type Window struct {
	// Start is the window's offset from Result.Started.
	Start time.Duration
	// Length is Config.Window, or less for a last window cut short by the
	// end of the run.
	Length time.Duration
	Cycles int64
	// ClaimLatencies of the cycles that finished in the window, sorted.
	ClaimLatencies []time.Duration
}

// CyclesPerSecond is the throughput within the window.
func (w Window) CyclesPerSecond() float64 { return float64(w.Cycles) / w.Length.Seconds() }

// ClaimPercentile returns the p-th percentile (0..100) of claim latency in
// the window.
func (w Window) ClaimPercentile(p float64) time.Duration { return percentile(w.ClaimLatencies, p) }

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p/100)]
}

// cycle is one finished cycle: when it finished, counted from the start of
// the run, and how long its claim took.
type cycle struct {
	done, claim time.Duration
}

// windows buckets cycles into consecutive windows of width covering the
// run's planned duration. A cycle in flight when the run ends still
// finishes; those that finish after the planned end are left out, so that
// the last window's rate is not inflated by them.
func windows(cycles []cycle, width, duration time.Duration) []Window {
	if width <= 0 || duration <= 0 {
		return nil
	}
	n := int((duration + width - 1) / width)
	out := make([]Window, n)
	for i := range out {
		out[i].Start = time.Duration(i) * width
		out[i].Length = min(width, duration-out[i].Start)
	}
	for _, c := range cycles {
		if c.done < 0 || c.done >= duration {
			continue
		}
		w := &out[int(c.done/width)]
		w.Cycles++
		w.ClaimLatencies = append(w.ClaimLatencies, c.claim)
	}
	for i := range out {
		slices.Sort(out[i].ClaimLatencies)
	}
	return out
}

// Run drives the servers until the duration has passed or ctx ends. It
// returns an error when a request fails or a key is claimed twice.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Clients < 1 || len(cfg.Servers) == 0 {
		return Result{}, errors.New("loadgen: need at least one client and one server")
	}
	transport := &http.Transport{MaxIdleConns: cfg.Clients * 2, MaxIdleConnsPerHost: cfg.Clients, DisableCompression: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var (
		holders sync.Map
		total   Result
		mu      sync.Mutex
		firstEr error
		wg      sync.WaitGroup
		double  atomic.Int64
	)
	start := time.Now()
	total.Started = start
	for w := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := worker(ctx, client, cfg, w, start, &holders, &double)
			mu.Lock()
			defer mu.Unlock()
			total.Cycles += r.Cycles
			total.Empty += r.Empty
			total.ClaimLatencies = append(total.ClaimLatencies, r.ClaimLatencies...)
			total.cycles = append(total.cycles, r.cycles...)
			if err != nil && firstEr == nil {
				firstEr = err
				cancel()
			}
		}()
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	total.DoubleClaims = double.Load()
	slices.Sort(total.ClaimLatencies)
	total.Windows = windows(total.cycles, cfg.Window, cfg.Duration)
	total.cycles = nil
	if firstEr == nil && total.DoubleClaims > 0 {
		firstEr = fmt.Errorf("loadgen: %d keys were claimed while another worker held them", total.DoubleClaims)
	}
	return total, firstEr
}

type lease struct {
	KeyID      string `json:"keyId"`
	LeaseToken string `json:"leaseToken"`
}

func worker(ctx context.Context, client *http.Client, cfg Config, w int, runStart time.Time, holders *sync.Map, double *atomic.Int64) (Result, error) {
	var r Result
	pool := url.QueryEscape(cfg.Pool)
	for i := 0; ctx.Err() == nil; i++ {
		server := cfg.Servers[(w+i)%len(cfg.Servers)]
		started := time.Now()
		// A claim in flight when the run ends is finished, not cut short: a
		// client that drops a claim's answer may leave a key held until
		// its lease runs out.
		status, body, err := call(context.WithoutCancel(ctx), client, http.MethodGet, server+"/keys?pool="+pool)
		if err != nil {
			return r, err
		}
		if status == http.StatusNotFound {
			r.Empty++
			time.Sleep(time.Millisecond)
			continue
		}
		if status != http.StatusOK {
			return r, fmt.Errorf("claim: status %d: %s", status, body)
		}
		claimed := time.Since(started)
		r.ClaimLatencies = append(r.ClaimLatencies, claimed)
		var l lease
		if err := json.Unmarshal(body, &l); err != nil || l.KeyID == "" || l.LeaseToken == "" {
			return r, fmt.Errorf("claim: unexpected body %s", body)
		}
		if _, taken := holders.LoadOrStore(l.KeyID, w); taken {
			double.Add(1)
		}
		query := "?lease=" + url.QueryEscape(l.LeaseToken)
		if cfg.KeepAlive {
			if status, body, err := call(context.WithoutCancel(ctx), client, http.MethodPut, server+"/keys/"+l.KeyID+"/keepalive"+query); err != nil {
				return r, fmt.Errorf("keep-alive: %w", err)
			} else if status != http.StatusOK {
				return r, fmt.Errorf("keep-alive: status %d: %s", status, body)
			}
		}
		// Forget the key before giving it back: once released, another
		// worker may get it at once.
		holders.Delete(l.KeyID)
		if status, body, err := call(context.WithoutCancel(ctx), client, http.MethodPut, server+"/keys/"+l.KeyID+query); err != nil {
			return r, fmt.Errorf("release: %w", err)
		} else if status != http.StatusOK {
			return r, fmt.Errorf("release: status %d: %s", status, body)
		}
		r.Cycles++
		if cfg.Window > 0 {
			r.cycles = append(r.cycles, cycle{done: time.Since(runStart), claim: claimed})
		}
	}
	return r, nil
}

func call(ctx context.Context, client *http.Client, method, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}
