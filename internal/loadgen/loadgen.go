// Package loadgen drives running servers over HTTP with concurrent workers
// doing claim → (keep-alive) → release cycles, and checks on every claim
// that no other worker holds the key: a double assignment fails the run.
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
}

// Result sums a run up.
type Result struct {
	Cycles  int64
	Elapsed time.Duration
	// Empty counts claims answered 404 (no free key); they are retried.
	Empty int64
	// DoubleAssignments counts claims of a key another worker held.
	DoubleAssignments int64
	// ClaimLatencies of every successful claim, sorted.
	ClaimLatencies []time.Duration
}

// CyclesPerSecond is the throughput of the run.
func (r Result) CyclesPerSecond() float64 { return float64(r.Cycles) / r.Elapsed.Seconds() }

// ClaimPercentile returns the p-th percentile (0..100) of claim latency.
func (r Result) ClaimPercentile(p float64) time.Duration {
	if len(r.ClaimLatencies) == 0 {
		return 0
	}
	i := int(float64(len(r.ClaimLatencies)-1) * p / 100)
	return r.ClaimLatencies[i]
}

// Run drives the servers until the duration has passed or ctx ends. It
// returns an error when a request fails or a key is assigned twice.
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
	for w := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := worker(ctx, client, cfg, w, &holders, &double)
			mu.Lock()
			defer mu.Unlock()
			total.Cycles += r.Cycles
			total.Empty += r.Empty
			total.ClaimLatencies = append(total.ClaimLatencies, r.ClaimLatencies...)
			if err != nil && firstEr == nil {
				firstEr = err
				cancel()
			}
		}()
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	total.DoubleAssignments = double.Load()
	slices.Sort(total.ClaimLatencies)
	if firstEr == nil && total.DoubleAssignments > 0 {
		firstEr = fmt.Errorf("loadgen: %d keys were assigned while another worker held them", total.DoubleAssignments)
	}
	return total, firstEr
}

type lease struct {
	KeyID      string `json:"keyId"`
	LeaseToken string `json:"leaseToken"`
}

func worker(ctx context.Context, client *http.Client, cfg Config, w int, holders *sync.Map, double *atomic.Int64) (Result, error) {
	var r Result
	pool := url.QueryEscape(cfg.Pool)
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return r, nil
		}
		server := cfg.Servers[(w+i)%len(cfg.Servers)]
		started := time.Now()
		// A claim in flight when the run ends is finished, not cut short: a
		// client that drops a claim's answer may leave a key blocked until
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
		r.ClaimLatencies = append(r.ClaimLatencies, time.Since(started))
		var l lease
		if err := json.Unmarshal(body, &l); err != nil || l.KeyID == "" || l.LeaseToken == "" {
			return r, fmt.Errorf("claim: unexpected body %s", body)
		}
		if _, taken := holders.LoadOrStore(l.KeyID, w); taken {
			double.Add(1)
		}
		query := "?lease=" + url.QueryEscape(l.LeaseToken)
		if cfg.KeepAlive {
			if status, body, err := call(context.WithoutCancel(ctx), client, http.MethodPut, server+"/keys/"+l.KeyID+"/keepalive"+query); err != nil || status != http.StatusOK {
				return r, fmt.Errorf("keep-alive: status %d, %v: %s", status, err, body)
			}
		}
		// Forget the key before giving it back: once released, another
		// worker may get it at once.
		holders.Delete(l.KeyID)
		if status, body, err := call(context.WithoutCancel(ctx), client, http.MethodPut, server+"/keys/"+l.KeyID+query); err != nil || status != http.StatusOK {
			return r, fmt.Errorf("release: status %d, %v: %s", status, err, body)
		}
		r.Cycles++
	}
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
