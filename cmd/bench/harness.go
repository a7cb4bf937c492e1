package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenorchestrator/tokenorchestrator/internal/migrate"
	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/loadgen"
)

const benchDB = "tokenorchestrator_bench"

// clusterSettings are what the harness's own cluster changes from a stock
// PostgreSQL: room for the biggest scenario's connections, and the
// statistics the cost table reads. Everything else, autovacuum included,
// stays as a fresh installation has it, so that the figures speak for a
// production server rather than for a server tuned for tests.
var clusterSettings = map[string]string{
	"max_connections":          "300",
	"shared_preload_libraries": "pg_stat_statements",
}

// reportedSettings are the server settings that move these figures most;
// the report lists them as the server has them.
var reportedSettings = []string{"autovacuum", "synchronous_commit", "fsync", "shared_buffers",
	"max_connections", "wal_level", "checkpoint_timeout"}

type setting struct{ name, value string }

type harness struct {
	o        options
	adminURL string
	cluster  *pgembed.Cluster
	tmp      string
	// walDir is the server's pg_wal when this machine can read it.
	walDir   string
	pgbench  string
	waldump  string
	script   string
	maxConns int
	// serverMajor is the server's major version, e.g. "15".
	serverMajor string
	pgVersion   string
	settings    []setting
	// statements is why pg_stat_statements cannot be read, or empty.
	statements string
}

func newHarness(ctx context.Context, o options) (*harness, error) {
	h := &harness{o: o, adminURL: o.adminURL}
	if _, err := os.Stat(o.serverBin); err != nil {
		return nil, fmt.Errorf("server binary %s: %w (run make build)", o.serverBin, err)
	}
	var err error
	if h.script, err = pgbenchScript(o.queries, time.Hour); err != nil {
		return nil, err
	}
	if h.adminURL == "" {
		if err := h.startCluster(ctx); err != nil {
			return nil, err
		}
	} else if err := ping(ctx, h.adminURL); err != nil {
		return nil, fmt.Errorf("the server given with -database-url: %w", err)
	}
	if err := h.readServer(ctx); err != nil {
		h.close()
		return nil, err
	}
	if h.pgbench, err = findPgTool("pgbench", h.serverMajor); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

// startCluster starts the harness's own PostgreSQL in a temporary
// directory, dropped again by close.
func (h *harness) startCluster(ctx context.Context) error {
	var err error
	if h.tmp, err = os.MkdirTemp("", "bench-pg-"); err != nil {
		return err
	}
	// The server may run as another user (postgres, when we are root).
	_ = os.Chmod(h.tmp, 0o755)
	dataDir := filepath.Join(h.tmp, "data")
	fmt.Println("starting the harness's own PostgreSQL cluster in", dataDir)
	h.cluster, err = pgembed.Start(ctx, pgembed.Config{DataDir: dataDir, Settings: clusterSettings})
	if err != nil {
		os.RemoveAll(h.tmp)
		return err
	}
	h.adminURL = h.cluster.URL()
	return nil
}

// readServer reads the server's version and settings, and finds out what
// the cost table can read: pg_stat_statements, and the WAL files for
// pg_waldump (only on this machine, only when they are readable).
func (h *harness) readServer(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, h.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	show := func(name string) (string, error) {
		var v string
		err := conn.QueryRow(ctx, "SHOW "+name).Scan(&v)
		return v, err
	}
	if h.pgVersion, err = show("server_version"); err != nil {
		return err
	}
	num, err := show("server_version_num")
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(num); err == nil {
		h.serverMajor = strconv.Itoa(n / 10000)
	}
	for _, name := range reportedSettings {
		v, err := show(name)
		if err != nil {
			return err
		}
		h.settings = append(h.settings, setting{name, v})
	}
	maxConns, _ := show("max_connections")
	h.maxConns, _ = strconv.Atoi(maxConns)

	if libs, _ := show("shared_preload_libraries"); !strings.Contains(libs, "pg_stat_statements") {
		h.statements = "pg_stat_statements is not in the server's shared_preload_libraries"
	} else if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		h.statements = "CREATE EXTENSION pg_stat_statements failed: " + err.Error()
	}

	if h.cluster != nil || isLoopback(h.adminURL) {
		if dir, err := show("data_directory"); err == nil {
			if _, err := os.ReadDir(filepath.Join(dir, "pg_wal")); err == nil {
				h.walDir = filepath.Join(dir, "pg_wal")
			}
		}
	}
	if h.walDir != "" {
		if h.waldump, err = findPgTool("pg_waldump", h.serverMajor); err != nil {
			h.walDir = ""
		}
	}
	return nil
}

func isLoopback(url string) bool {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return false
	}
	ip := net.ParseIP(cfg.Host)
	return cfg.Host == "localhost" || (ip != nil && ip.IsLoopback())
}

// postmasterPID is the harness's own cluster's postmaster, 0 for a server
// given with -database-url (its CPU time is not ours to read).
func (h *harness) postmasterPID() int {
	if h.cluster == nil {
		return 0
	}
	return h.cluster.PID()
}

func (h *harness) close() {
	if h.cluster != nil {
		_ = h.cluster.Stop()
		os.RemoveAll(h.tmp)
	}
}

// recreateDB drops and creates a database and returns its URL.
func (h *harness) recreateDB(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, h.adminURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	return withDatabase(h.adminURL, name), nil
}

// freshDB recreates the bench database with the schema applied.
func (h *harness) freshDB(ctx context.Context) (string, error) {
	url, err := h.recreateDB(ctx, benchDB)
	if err != nil {
		return "", err
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return "", err
	}
	defer pool.Close()
	return url, migrate.Up(ctx, pool)
}

// loadKeys bulk-loads n free keys into the pool with COPY, then vacuums
// and analyses the database.
func loadKeys(ctx context.Context, url, pool string, n int) error {
	if _, err := copyKeys(ctx, url, keyLoad{pools: []string{pool}, perPool: n}); err != nil {
		return err
	}
	return vacuum(ctx, url)
}

// keyLoad is what copyKeys writes: perPool free keys of one seat in each
// of pools, the keys of pools[0] first. The i-th key of the load (counted
// over every pool) is the one at index i of what copyKeys returns.
type keyLoad struct {
	pools   []string
	perPool int
	// paid, when set, gives every key a label: tier=paid to the i-th key
	// where paid(i), tier=free to the others. Without it keys have none.
	paid func(i int) bool
	// named gives the i-th key the name keyName(i).
	named bool
	// created, when set, is when the keys were created: their created_at
	// and, as KeyCreate writes, their created events, spread over the hour
	// from then. Without it keys are created now, with no history.
	created time.Time
}

func (l keyLoad) keys() int { return len(l.pools) * l.perPool }

func keyName(i int) string { return fmt.Sprintf("key-%07d", i) }

const (
	paidLabel = "tier=paid"
	freeLabel = "tier=free"
)

// copyKeys bulk-loads keys with COPY: a row of keys (identity and life)
// and one of key_state (its lease state, free here) per key, a row of
// key_labels per label, the keys' created events when asked for, and each
// pool's totals; what KeyCreate and KeyCreateWithSecrets write, without
// secrets. It neither vacuums nor analyses. It returns the keys' ids.
func copyKeys(ctx context.Context, url string, l keyLoad) ([]uuid.UUID, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	n := l.keys()
	created := l.created
	if created.IsZero() {
		created = time.Now()
	}
	expires := time.Now().Add(24 * time.Hour)
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
	}
	poolOf := func(i int) string { return l.pools[i/l.perPool] }
	label := func(i int) string {
		if l.paid(i) {
			return paidLabel
		}
		return freeLabel
	}
	paidJSON, freeJSON := []byte(`{"tier": "paid"}`), []byte(`{"tier": "free"}`)
	if _, err = conn.CopyFrom(ctx, pgx.Identifier{"keys"}, []string{"id", "pool", "created_at", "expires_at", "labels", "name"},
		pgx.CopyFromSlice(n, func(i int) ([]any, error) {
			var labels, name any
			if l.paid != nil {
				labels = freeJSON
				if l.paid(i) {
					labels = paidJSON
				}
			}
			if l.named {
				name = keyName(i)
			}
			return []any{ids[i], poolOf(i), created, expires, labels, name}, nil
		})); err != nil {
		return nil, fmt.Errorf("COPY keys: %w", err)
	}
	if _, err = conn.CopyFrom(ctx, pgx.Identifier{"key_state"}, []string{"key_id", "pool", "labelled"},
		pgx.CopyFromSlice(n, func(i int) ([]any, error) { return []any{ids[i], poolOf(i), l.paid != nil}, nil })); err != nil {
		return nil, fmt.Errorf("COPY key_state: %w", err)
	}
	if l.paid != nil {
		// One row per label and seat, claimable (position set, by its
		// default), as KeyCreateWithSecrets writes them.
		if _, err = conn.CopyFrom(ctx, pgx.Identifier{"key_labels"}, []string{"key_id", "pool", "label"},
			pgx.CopyFromSlice(n, func(i int) ([]any, error) { return []any{ids[i], poolOf(i), label(i)}, nil })); err != nil {
			return nil, fmt.Errorf("COPY key_labels: %w", err)
		}
	}
	if !l.created.IsZero() {
		step := time.Hour / time.Duration(n)
		if _, err = conn.CopyFrom(ctx, pgx.Identifier{"key_events"}, []string{"at", "key_id", "pool", "event"},
			pgx.CopyFromSlice(n, func(i int) ([]any, error) {
				return []any{created.Add(time.Duration(i) * step), ids[i], poolOf(i), "created"}, nil
			})); err != nil {
			return nil, fmt.Errorf("COPY key_events: %w", err)
		}
	}
	// Every key has one seat.
	if _, err = conn.Exec(ctx, `INSERT INTO pool_count_totals AS t (pool, keys, seats)
		SELECT p, $2, $2 FROM unnest($1::text[]) AS p
		ON CONFLICT (pool) DO UPDATE SET keys = t.keys + excluded.keys, seats = t.seats + excluded.seats`, l.pools, l.perPool); err != nil {
		return nil, fmt.Errorf("counts: %w", err)
	}
	return ids, nil
}

func vacuum(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "VACUUM ANALYZE")
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
	profiling := h.o.profile != "" && replicas == 1 && clients == h.o.profileClients && !strings.Contains(name, "COPY")
	debugAddr := ""
	if profiling {
		port, err := pgembed.FreePort()
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
	var statementsBefore map[string]statementCounters
	if h.statements == "" {
		if statementsBefore, err = readStatementsOf(ctx, h.adminURL, benchDB); err != nil {
			stopServers(servers)
			return r, err
		}
	}
	before := cpuSeconds(servers)
	pgBefore, selfBefore := postgresCPU(h.postmasterPID()), selfCPU()
	res, err := loadgen.Run(ctx, loadgen.Config{Servers: urls(servers), Pool: "bench", Clients: clients, Duration: h.o.duration})
	r.fill(res, servers, before)
	if err == nil && statementsBefore != nil {
		after, serr := readStatementsOf(ctx, h.adminURL, benchDB)
		if serr != nil {
			stopServers(servers)
			return r, serr
		}
		r.statements = statementsPerCycle(statementsBefore, after, res.Cycles)
	}
	if cycles := float64(res.Cycles); cycles > 0 {
		r.cpu = cpuSplit{
			server: (cpuSeconds(servers) - before) / cycles * 1e6,
			client: (selfCPU() - selfBefore) / cycles * 1e6,
		}
		if pid := h.postmasterPID(); pid != 0 {
			r.cpu.postgres = (postgresCPU(pid) - pgBefore) / cycles * 1e6
		}
	}
	stopServers(servers)
	if err != nil {
		return r, err
	}
	pgClients := h.pgbenchClients(&r, clients)
	if r.floor, r.floorCPU, err = h.floorRun(ctx, poolSize, pgClients, h.o.duration); err != nil {
		return r, fmt.Errorf("floor: %w", err)
	}
	if err := vacuum(ctx, url); err != nil {
		return r, err
	}
	out, err := runPgbench(ctx, h.pgbench, pgbenchRun{url: url, script: h.script, clients: pgClients, service: true,
		duration: h.o.duration, defines: []string{"pool=bench"}})
	r.serviceSQL = out.tps
	return r, err
}

// pgbenchClients caps pgbench's clients below the server's connection
// limit, noting it in the row.
func (h *harness) pgbenchClients(r *row, clients int) int {
	n := min(clients, h.maxConns-10)
	if n < clients {
		r.addNote(fmt.Sprintf("pgbench at %d clients (max_connections %d)", n, h.maxConns))
	}
	return n
}

// massExpiry claims n keys whose leases all end at the same moment, and
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
	defer func() { stopServers(servers) }()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return r, err
	}
	defer pool.Close()
	const leaseTTL = 5 * time.Second
	// All n keys in one statement, so that their leases end at one moment;
	// it may take seconds on a large n.
	st := store.New(pool, store.Config{LeaseTTL: leaseTTL, QueryTimeout: 5 * time.Minute})
	defer st.Close()
	loadTime := leaseTTL + sweep + 6*time.Second
	claimed, err := st.ClaimMany(ctx, "expiring", n)
	if err != nil {
		return r, fmt.Errorf("claim %d expiring keys: %w", n, err)
	}
	if len(claimed) != n {
		return r, fmt.Errorf("claim %d expiring keys: got %d", n, len(claimed))
	}
	deadline := *claimed[0].LeaseExpiresAt

	before := cpuSeconds(servers)
	type outcome struct {
		res loadgen.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := loadgen.Run(ctx, loadgen.Config{Servers: urls(servers), Pool: "bench", Clients: clients, Duration: loadTime})
		done <- outcome{res, err}
	}()
	var releasedAt time.Time
	for releasedAt.IsZero() {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		counts, err := st.CountPool(ctx, "expiring")
		if err != nil {
			return r, err
		}
		if counts.Held == 0 {
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
	r.addNote(fmt.Sprintf("all %d released %.2f s after their deadline (SWEEP_INTERVAL %s)", n, releasedAt.Sub(deadline).Seconds(), sweep))
	if out.err != nil {
		return r, out.err
	}
	stopServers(servers)
	servers = nil
	// The floor has no background job to compare with; it gives the rate
	// the claiming clients could have had.
	if r.floor, err = h.floorRate(ctx, workPool, h.pgbenchClients(&r, clients), loadTime); err != nil {
		return r, fmt.Errorf("floor: %w", err)
	}
	return r, nil
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
		port, err := pgembed.FreePort()
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

// withDatabase is the URL with another database, credentials and
// parameters kept.
func withDatabase(admin, name string) string {
	if u, err := neturl.Parse(admin); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	// A keyword/value string: rebuilt as a URL.
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		return admin
	}
	u := neturl.URL{Scheme: "postgres", Host: fmt.Sprintf("%s:%d", cfg.Host, cfg.Port), Path: "/" + name}
	if cfg.Password != "" {
		u.User = neturl.UserPassword(cfg.User, cfg.Password)
	} else {
		u.User = neturl.User(cfg.User)
	}
	if cfg.TLSConfig == nil {
		u.RawQuery = "sslmode=disable"
	}
	return u.String()
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
