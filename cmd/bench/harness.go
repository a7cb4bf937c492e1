package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenorchestrator/tokenorchestrator/db/dbsqlc"
	"github.com/tokenorchestrator/tokenorchestrator/internal/loadgen"
	"github.com/tokenorchestrator/tokenorchestrator/internal/migrate"
	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
)

const benchDB = "tokenorchestrator_bench"

type harness struct {
	o         options
	adminURL  string
	cluster   *pgembed.Cluster
	tmp       string
	pgbench   string
	script    string
	maxConns  int
	pgVersion string
}

func newHarness(ctx context.Context, o options) (*harness, error) {
	h := &harness{o: o, adminURL: o.adminURL}
	if _, err := os.Stat(o.serverBin); err != nil {
		return nil, fmt.Errorf("server binary %s: %w (run make build)", o.serverBin, err)
	}
	if err := ping(ctx, h.adminURL); err != nil {
		fmt.Println("no PostgreSQL at", h.adminURL, "- starting an embedded cluster")
		if h.tmp, err = os.MkdirTemp("", "bench-pg-"); err != nil {
			return nil, err
		}
		_ = os.Chmod(h.tmp, 0o755)
		h.cluster, err = pgembed.Start(ctx, pgembed.Config{DataDir: filepath.Join(h.tmp, "data"),
			Settings: map[string]string{"max_connections": "300"}})
		if err != nil {
			return nil, err
		}
		h.adminURL = h.cluster.URL()
	}
	var err error
	if h.pgbench, err = findPgbench(); err != nil {
		return nil, err
	}
	if h.script, err = pgbenchScript(o.queries, time.Hour); err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, h.adminURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	var maxConns string
	if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&maxConns); err != nil {
		return nil, err
	}
	h.maxConns, _ = strconv.Atoi(maxConns)
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&h.pgVersion); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *harness) close() {
	if h.cluster != nil {
		_ = h.cluster.Stop()
		os.RemoveAll(h.tmp)
	}
}

// freshDB recreates the bench database with the schema applied.
func (h *harness) freshDB(ctx context.Context) (string, error) {
	conn, err := pgx.Connect(ctx, h.adminURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+benchDB+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+benchDB); err != nil {
		return "", err
	}
	url := withDatabase(h.adminURL, benchDB)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return "", err
	}
	defer pool.Close()
	return url, migrate.Up(ctx, pool)
}

// loadKeys bulk-loads n free keys into the pool with COPY.
func loadKeys(ctx context.Context, url, pool string, n int) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	expires := time.Now().Add(24 * time.Hour)
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"keys"}, []string{"pool", "expires_at"},
		pgx.CopyFromSlice(n, func(int) ([]any, error) { return []any{pool, expires}, nil }))
	if err != nil {
		return fmt.Errorf("COPY: %w", err)
	}
	return vacuum(ctx, url)
}

func vacuum(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "VACUUM ANALYZE keys")
	return err
}

// throughput measures claim/release cycles through HTTP, then the same SQL
// through pgbench on the same database.
func (h *harness) throughput(ctx context.Context, name string, poolSize, clients, replicas int) (row, error) {
	r := row{name: name, replicas: replicas, clients: clients, pool: poolSize}
	url, err := h.freshDB(ctx)
	if err != nil {
		return r, err
	}
	if err := loadKeys(ctx, url, "bench", poolSize); err != nil {
		return r, err
	}
	var env []string
	profiling := h.o.profile != "" && replicas == 1 && clients == 32 && !strings.Contains(name, "COPY")
	debugAddr := ""
	if profiling {
		port, err := freePort()
		if err != nil {
			return r, err
		}
		debugAddr = fmt.Sprintf("127.0.0.1:%d", port)
		env = append(env, "DEBUG_ADDR="+debugAddr)
	}
	servers, err := h.startServers(ctx, url, replicas, env)
	if err != nil {
		return r, err
	}
	if profiling {
		profiled := make(chan error, 1)
		defer func() {
			if err := <-profiled; err != nil {
				fmt.Println("profile:", err)
			}
		}()
		go func() { profiled <- fetchProfile(debugAddr, h.o.duration, h.o.profile) }()
	}
	// A short warm-up fills connection pools and plan caches.
	if _, err := loadgen.Run(ctx, loadgen.Config{Servers: urls(servers), Pool: "bench", Clients: clients, Duration: time.Second}); err != nil {
		stopServers(servers)
		return r, err
	}
	before := cpuSeconds(servers)
	res, err := loadgen.Run(ctx, loadgen.Config{Servers: urls(servers), Pool: "bench", Clients: clients, Duration: h.o.duration})
	r.fill(res, servers, before)
	stopServers(servers)
	if err != nil {
		return r, err
	}
	if err := vacuum(ctx, url); err != nil {
		return r, err
	}
	pgClients := min(clients, h.maxConns-10)
	if pgClients < clients {
		r.note = fmt.Sprintf("pgbench at %d clients (max_connections %d)", pgClients, h.maxConns)
	}
	r.pgbench, err = runPgbench(ctx, h.pgbench, url, h.script, "bench", pgClients, h.o.duration)
	return r, err
}

// massExpiry blocks n keys whose leases all end at the same moment, and
// measures how long after that moment the background job has released them
// all, while clients keep claiming from another pool.
func (h *harness) massExpiry(ctx context.Context, n, workPool, clients int) (row, error) {
	r := row{name: fmt.Sprintf("%d leases ending at once", n), replicas: 1, clients: clients, pool: workPool}
	url, err := h.freshDB(ctx)
	if err != nil {
		return r, err
	}
	if err := loadKeys(ctx, url, "bench", workPool); err != nil {
		return r, err
	}
	if err := loadKeys(ctx, url, "expiring", n); err != nil {
		return r, err
	}
	const sweep = time.Second
	servers, err := h.startServers(ctx, url, 1, []string{"SWEEP_INTERVAL=" + sweep.String()})
	if err != nil {
		return r, err
	}
	defer stopServers(servers)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return r, err
	}
	defer pool.Close()
	q := dbsqlc.New(pool)

	const leaseTTL = 5 * time.Second
	claimed, err := q.KeyClaim(ctx, dbsqlc.KeyClaimParams{Pool: "expiring", StartPosition: 0, Max: int32(n), LeaseTtlSeconds: leaseTTL.Seconds()})
	if err != nil || len(claimed) != n {
		return r, fmt.Errorf("claim %d expiring keys: got %d, %v", n, len(claimed), err)
	}
	deadline := *claimed[0].LeaseExpiresAt

	before := cpuSeconds(servers)
	type outcome struct {
		res loadgen.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := loadgen.Run(ctx, loadgen.Config{Servers: urls(servers), Pool: "bench", Clients: clients, Duration: leaseTTL + sweep + 6*time.Second})
		done <- outcome{res, err}
	}()
	var releasedAt time.Time
	for releasedAt.IsZero() {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		counts, err := q.PoolCountsGet(ctx, "expiring")
		if err != nil {
			return r, err
		}
		if counts.Blocked == 0 {
			if err := pool.QueryRow(ctx, "SELECT now()").Scan(&releasedAt); err != nil {
				return r, err
			}
		}
		if time.Until(deadline) < -30*time.Second {
			return r, errors.New("leases not released 30 s after their deadline")
		}
	}
	out := <-done
	r.fill(out.res, servers, before)
	r.note = fmt.Sprintf("all %d released %.2f s after their deadline (SWEEP_INTERVAL %s)", n, releasedAt.Sub(deadline).Seconds(), sweep)
	return r, out.err
}

type serverProc struct {
	url string
	cmd *exec.Cmd
}

func urls(servers []*serverProc) []string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = s.url
	}
	return out
}

func (h *harness) startServers(ctx context.Context, dbURL string, n int, env []string) ([]*serverProc, error) {
	var servers []*serverProc
	for range n {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(h.o.serverBin)
		// No drain delay: no load balancer has to learn that a server stops.
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, fmt.Sprintf("ADDR=127.0.0.1:%d", port), "LOG_LEVEL=warn", "DRAIN_DELAY=0")
		cmd.Env = append(cmd.Env, env...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			stopServers(servers)
			return nil, err
		}
		s := &serverProc{url: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
		servers = append(servers, s)
		if err := waitReady(ctx, s.url); err != nil {
			stopServers(servers)
			return nil, err
		}
	}
	return servers, nil
}

func stopServers(servers []*serverProc) {
	for _, s := range servers {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		_ = s.cmd.Wait()
	}
}

func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("server at %s not ready", url)
}

// cpuSeconds sums the CPU time the servers have used so far.
func cpuSeconds(servers []*serverProc) float64 {
	total := 0.0
	for _, s := range servers {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses.
		fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		total += (utime + stime) / 100 // clock ticks
	}
	return total
}

// peakRSS is the largest resident set any of the servers has had, in MB.
func peakRSS(servers []*serverProc) float64 {
	peak := 0.0
	for _, s := range servers {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "VmHWM:") {
				kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
				peak = max(peak, kb/1024)
			}
		}
	}
	return peak
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func withDatabase(admin, name string) string {
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		return admin
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// fetchProfile saves a CPU profile of the server taken during the measured
// run (after the warm-up).
func fetchProfile(addr string, duration time.Duration, path string) error {
	time.Sleep(time.Second) // the warm-up
	seconds := max(1, int(duration.Seconds())-1)
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}
