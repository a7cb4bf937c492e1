package failover

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/netcut"
)

// enabled: the test takes minutes and needs pg_auto_failover and root, so
// it runs only when asked.
func enabled(t *testing.T) {
	if os.Getenv("FAILOVER_TESTS") != "on" {
		t.Skip("the failover test runs with FAILOVER_TESTS=on (make test-failover): it takes a few minutes, " +
			"runs as root and needs pg_auto_failover")
	}
	t.Cleanup(func() { sayFailuresLast(t) })
}

// A failed run logs the ends of the formation's and the replicas' logs
// after its findings, and a long output is read from its end: every
// failure goes through errorf or fatalf, which record it, and is said
// again as the test's last lines.
var (
	failuresMu sync.Mutex
	failures   = map[*testing.T][]string{}
)

func errorf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Error(recordFailure(t, format, args...))
}

func fatalf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Fatal(recordFailure(t, format, args...))
}

func recordFailure(t *testing.T, format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	failuresMu.Lock()
	defer failuresMu.Unlock()
	failures[t] = append(failures[t], msg)
	return msg
}

func sayFailuresLast(t *testing.T) {
	failuresMu.Lock()
	msgs := failures[t]
	delete(failures, t)
	failuresMu.Unlock()
	if len(msgs) == 0 {
		if t.Failed() {
			t.Log("this test failed on a check that did not go through errorf or fatalf: look above")
		}
		return
	}
	const most = 20
	total, more := len(msgs), ""
	if total > most {
		msgs, more = msgs[:most], fmt.Sprintf("\n… and %d more, above", total-most)
	}
	t.Logf("this test failed on (%d):\n%s%s", total, shortLines(strings.Join(msgs, "\n"), 400), more)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binaryDir != "" {
		os.RemoveAll(binaryDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binary    string
	binaryDir string
	buildErr  error
)

// serverBinary builds the server once per test run; SERVER_BIN names one
// built already.
func serverBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("SERVER_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		if binaryDir, buildErr = os.MkdirTemp("", "failover-bin-"); buildErr != nil {
			return
		}
		binary = filepath.Join(binaryDir, "token-orchestrator")
		out, err := exec.Command("go", "build", "-o", binary, "github.com/tokenorchestrator/tokenorchestrator/cmd/token-orchestrator").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%w\n%s", err, out)
		}
	})
	if buildErr != nil {
		fatalf(t, "build the server: %v", buildErr)
	}
	return binary
}

// Settings of the run. Leases are far longer than any outage, so that the
// background job never ends a lease a client still holds: a lease taken
// away is then a fault of the failover, not of a slow client.
const (
	leaseTTL = 2 * time.Minute
	clients  = 12
	pool     = "failover"
)

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// replica is one server process.
type replica struct {
	url  string
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

func startReplica(t *testing.T, dbURL string) *replica {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := &replica{url: "http://" + addr, log: &lockedBuffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(serverBinary(t), "serve")
	r.cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "ADDR="+addr,
		"LOG_LEVEL=warn", "SHUTDOWN_TIMEOUT=5s", "DRAIN_DELAY=0s",
		"LEASE_TTL="+leaseTTL.String(), "KEY_TTL=1h", "SWEEP_INTERVAL=200ms",
		"ADMIN_TOKEN=", "CLIENT_TOKEN=", "ADMIN_TOKEN_FILE=", "CLIENT_TOKEN_FILE=",
		"SECRET_KEY=", "SECRET_KEY_FILE=", "SECRET_KEYS_OLD=", "SECRET_KEYS_OLD_FILE=",
		"REPORT_DATABASE_URL=", "LEADER_ELECTION=false")
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		fatalf(t, "%v", err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("end of the log of replica %s:\n%s", r.url, shortLines(lastLines(r.log.String(), 20), 400))
		}
		if keepLogs(t) {
			name := "replica-" + strings.ReplaceAll(strings.TrimPrefix(r.url, "http://"), ":", "-") + ".log"
			_ = os.WriteFile(filepath.Join(keepDir(t), name), []byte(r.log.String()), 0o644)
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(r.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		select {
		case <-r.done:
			fatalf(t, "replica exited at start:\n%s", r.log.String())
		default:
		}
		if time.Now().After(deadline) {
			fatalf(t, "replica not ready:\n%s", r.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// shortLines cuts each line to at most n bytes: the service's errors
// during an outage are long.
func shortLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if len(l) > n {
			lines[i] = l[:n] + "…"
		}
	}
	return strings.Join(lines, "\n")
}

func (r *replica) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

func (r *replica) alive() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// probe watches each node and records when it commits a write: the HA
// manager's part of an outage ends when the new primary does.
type probe struct {
	mu sync.Mutex
	// samples per node name: when a probe of the node ended, and whether
	// it committed a write.
	samples map[string][]sample
	stop    chan struct{}
	done    sync.WaitGroup
}

type sample struct {
	// start and at: when the probe began and ended.
	start, at time.Time
	writable  bool
	// synchronous_standby_names and the standbys that confirm commits,
	// when writable.
	syncNames    string
	syncStandbys int
}

// probeTable is the probe's table, made in the service's database on the
// primary; the service knows nothing of it.
const probeTable = "failover_probe"

func startProbe(t *testing.T, dbURL string, nodes []*node) *probe {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		fatalf(t, "%v", err)
	}
	_, err = conn.Exec(ctx, "CREATE TABLE "+probeTable+" (node text PRIMARY KEY, at timestamptz NOT NULL)")
	_ = conn.Close(ctx)
	if err != nil {
		fatalf(t, "%v", err)
	}
	p := &probe{samples: map[string][]sample{}, stop: make(chan struct{})}
	for _, n := range nodes {
		p.done.Add(1)
		go func() {
			defer p.done.Done()
			p.watch(n)
		}()
	}
	t.Cleanup(p.close)
	return p
}

func (p *probe) close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
		p.done.Wait()
	}
}

// watch probes the node every 50 ms on one connection, opened again
// whenever it breaks. A probe writes a row of probeTable and commits: a
// commit that writes WAL, which waits for the synchronous standbys as the
// service's commits do (a transaction that only takes a transaction id
// writes none, and waits for nobody). A commit that waits longer than a
// second counts as none; its connection is dropped, and the backend left
// waiting on the server ends with the wait.
func (p *probe) watch(n *node) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if conn == nil {
			cfg, err := pgx.ParseConfig(n.url())
			if err == nil {
				cfg.ConnectTimeout = time.Second
				cfg.RuntimeParams["application_name"] = "failover probe"
				conn, err = pgx.ConnectConfig(ctx, cfg)
			}
			if err != nil {
				conn = nil
			}
		}
		writable := false
		var names string
		var syncStandbys int
		if conn != nil {
			// What target_session_attrs=read-write asks of a server:
			// pg_auto_failover sets default_transaction_read_only on a
			// promoted node until the old primary is demoted.
			var inRecovery bool
			var readOnly string
			err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')").Scan(&inRecovery, &readOnly)
			if err == nil && !inRecovery && readOnly == "off" {
				_, err = conn.Exec(ctx, "INSERT INTO "+probeTable+" (node, at) VALUES ($1, clock_timestamp()) "+
					"ON CONFLICT (node) DO UPDATE SET at = excluded.at", n.name)
				writable = err == nil
			}
			if err == nil && writable {
				// Under what replication the write committed.
				err = conn.QueryRow(ctx, `SELECT current_setting('synchronous_standby_names'),
					(SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))`).Scan(&names, &syncStandbys)
			}
			if err != nil {
				_ = conn.Close(context.Background())
				conn = nil
			}
			if errors.Is(err, context.DeadlineExceeded) {
				// A commit left waiting: no pile of them on the server.
				time.Sleep(time.Second)
			}
		}
		cancel()
		p.mu.Lock()
		p.samples[n.name] = append(p.samples[n.name], sample{start, time.Now(), writable, names, syncStandbys})
		p.mu.Unlock()
	}
}

// writableAfter returns when the node first committed a write begun
// after t.
func (p *probe) writableAfter(name string, t time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.samples[name] {
		if s.start.After(t) && s.writable {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// spell is a stretch of time during which a node committed writes.
type spell struct {
	from, to time.Time
	// syncNames and syncStandbys as the spell's first sample saw them.
	syncNames    string
	syncStandbys int
}

// writableSpells lists the spells, after t and before until, during which
// the node committed writes.
func (p *probe) writableSpells(name string, t, until time.Time) []spell {
	p.mu.Lock()
	defer p.mu.Unlock()
	var spells []spell
	var current *spell
	for _, s := range p.samples[name] {
		if !s.start.After(t) || s.at.After(until) {
			continue
		}
		switch {
		case s.writable && current == nil:
			current = &spell{from: s.at, syncNames: s.syncNames, syncStandbys: s.syncStandbys}
		case !s.writable && current != nil:
			current.to = s.at
			spells = append(spells, *current)
			current = nil
		}
	}
	if current != nil {
		current.to = until
		spells = append(spells, *current)
	}
	return spells
}

func rounds(t *testing.T) int {
	n := 1
	if v := os.Getenv("FAILOVER_ROUNDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			fatalf(t, "FAILOVER_ROUNDS=%q: a positive number of rounds", v)
		}
	}
	return n
}

// With synchronous replication (pg_auto_failover's default: ANY 1 of the
// standbys confirms every commit), a failover loses nothing the service
// acknowledged, never gives a seat to two clients, and the clients see
// only 503 with Retry-After until the new primary serves.
func TestFailoverSynchronous(t *testing.T) {
	enabled(t)
	res := runFailover(t, false)
	for _, f := range res.report.safetyFindings() {
		errorf(t, "%v", f)
	}
}

// With asynchronous replication a commit is acknowledged before any
// standby has it, so a failover may lose what the service acknowledged
// just before it: the test shows what was lost, and fails only on answers
// the clients must never see.
func TestFailoverAsynchronous(t *testing.T) {
	enabled(t)
	res := runFailover(t, true)
	if f := res.report.safetyFindings(); len(f) > 0 {
		t.Logf("what asynchronous replication lost (%d findings):\n%s", len(f), strings.Join(f, "\n"))
	} else {
		t.Log("nothing acknowledged was lost this time: the standby had every commit when the primary failed")
	}
}

type result struct {
	faults []fault
	report report
}

func runFailover(t *testing.T, async bool) result {
	started := time.Now()
	mode := "synchronous"
	if async {
		mode = "asynchronous"
	}
	f := startFormation(t, async)
	t.Logf("%s formation up in %s", mode, time.Since(started).Round(time.Millisecond))
	primary := f.waitStable(time.Minute, nil)
	names, states, err := replicationSettings(context.Background(), primary)
	if err != nil {
		fatalf(t, "%v", err)
	}
	t.Logf("primary %s: synchronous_standby_names = %q, standbys %v", primary.name, names, states)
	if async != (names == "") {
		fatalf(t, "the %s formation's primary has synchronous_standby_names = %q", mode, names)
	}

	dbURL := f.databaseURL()
	// Replica 0 reaches the nodes through proxies that can cut it off from
	// the primary; replica 1 reaches them directly.
	proxies := map[string]*netcut.Proxy{}
	var ports []int
	for _, n := range f.nodes {
		p := netcut.Start(t, fmt.Sprintf("127.0.0.1:%d", n.port))
		proxies[n.name] = p
		ports = append(ports, p.Port())
	}
	replicas := []*replica{startReplica(t, f.databaseURLVia(ports...)), startReplica(t, dbURL)}
	// The service tells which mode it runs under: the metric, and in the
	// asynchronous mode a warning in the log.
	wantMode := "synchronous"
	if async {
		wantMode = "asynchronous"
	}
	if got := replicationMode(t, replicas[0]); got != wantMode {
		errorf(t, "tokenorchestrator_db_replication_mode says %q, want %q", got, wantMode)
	}
	const warning = "the database's standbys are asynchronous"
	if async && !strings.Contains(replicas[1].log.String(), warning) {
		errorf(t, "no warning that the standbys are asynchronous in the log of replica %s", replicas[1].url)
	}
	if !async && strings.Contains(replicas[1].log.String(), warning) {
		errorf(t, "a warning that the standbys are asynchronous in the log of replica %s, with synchronous ones", replicas[1].url)
	}
	for _, body := range []string{`{"count": 6}`, `{"count": 3, "seats": 2}`} {
		resp, err := http.Post(replicas[0].url+"/keys?pool="+pool, "application/json", strings.NewReader(body))
		if err != nil {
			fatalf(t, "%v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			fatalf(t, "creating keys: %d", resp.StatusCode)
		}
	}

	leases := holdLeases(t, replicas)
	pr := startProbe(t, dbURL, f.nodes)
	log := &clientLog{}
	t.Cleanup(func() {
		if keepLogs(t) {
			writeClientLog(t, log.snapshot())
		}
	})
	stop := make(chan struct{})
	clientsDone := runClients(clientConfig{
		Servers: []string{replicas[0].url, replicas[1].url}, Pool: pool, Clients: clients, PlainEvery: 4,
		Hold: 20 * time.Millisecond, Pause: 30 * time.Millisecond, RetryPause: 100 * time.Millisecond,
		Patience: time.Minute,
	}, log, stop)
	stopClients := sync.OnceFunc(func() {
		close(stop)
		select {
		case <-clientsDone:
		case <-time.After(3 * time.Minute):
			errorf(t, "the clients did not finish their leases within 3 minutes of being told to stop")
		}
	})
	t.Cleanup(stopClients)

	var faults []fault
	for round := range rounds(t) {
		for _, kind := range []string{faultKill, faultSwitchover, faultCut, faultSlots} {
			primary := f.waitStable(3*time.Minute, nil)
			// Load on a settled formation before each fault.
			time.Sleep(3 * time.Second)
			ft := fault{Kind: kind, OldPrimary: primary.name, At: time.Now()}
			t.Logf("round %d: %s (primary %s)", round+1, kind, primary.name)
			var next *node
			var ok bool
			switch kind {
			case faultSwitchover:
				if err := f.switchover(); err != nil {
					fatalf(t, "%v", err)
				}
				next = f.waitStable(3*time.Minute, primary)
			case faultKill:
				next = f.waitAfterKill(3*time.Minute, primary, f.killPostmaster(primary))
			case faultCut:
				// The outage ends when the network does; what counts then
				// is the first claim the cut replica answers.
				proxies[primary.name].Cut()
				time.Sleep(cutFor)
				proxies[primary.name].Restore()
				next, ft.Writable, ft.Server = primary, time.Now(), replicas[0].url
			case faultSlots:
				held, ended := starveSlots(t, primary, cutFor)
				next, ft.Writable = primary, time.Now()
				t.Logf("  %d connections held the slots; %d of the service's sessions ended meanwhile", held, ended)
				if ended == 0 {
					errorf(t, "the service held no session on %s to end", primary.name)
				}
				t.Logf("  %d claims answered 200 meanwhile, on connections the service won back in the race for a free slot",
					log.claimsBetween("", ft.At, ft.Writable))
			}
			if kind == faultCut {
				if n := log.claimsBetween(replicas[1].url, ft.At, ft.Writable); n == 0 {
					errorf(t, "replica %s, not cut off, answered no claim during the cut", replicas[1].url)
				} else {
					t.Logf("  replica %s, not cut off, answered %d claims during the cut", replicas[1].url, n)
				}
			}
			ft.Stable = time.Now()
			ft.NewPrimary = next.name
			if ft.Writable.IsZero() {
				if ft.Writable, ok = pr.writableAfter(next.name, ft.At); !ok {
					fatalf(t, "the probe never saw %s commit a write after the fault", next.name)
				}
			}
			// A failover that lost releases (asynchronous replication) leaves
			// keys held by leases nobody holds: claims find no free key
			// until those leases end.
			deadline := time.Now().Add(leaseTTL + time.Minute)
			for ft.FirstClaim, ok = log.firstClaimAfter(ft.Server, ft.Writable); !ok; ft.FirstClaim, ok = log.firstClaimAfter(ft.Server, ft.Writable) {
				if time.Now().After(deadline) {
					fatalf(t, "no claim succeeded within %s of %s accepting writes", leaseTTL+time.Minute, next.name)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if served, ok := log.firstServedAfter(ft.Server, ft.Writable); ok {
				// After a failover that lost releases, keys held by leases
				// nobody holds are free only when those leases end: the
				// service serves, but claims find no free key.
				t.Logf("  the first answer other than 503 came %s after that", served.Sub(ft.Writable).Round(time.Millisecond))
			}
			if next == primary && (kind == faultKill || kind == faultSwitchover) {
				t.Logf("  no failover: %s's keeper restarted Postgres before the monitor acted", primary.name)
			}
			for _, sp := range pr.writableSpells(primary.name, ft.At, ft.Writable) {
				t.Logf("  the old primary %s committed writes from +%s to +%s (synchronous_standby_names %q, %d synchronous standbys)",
					primary.name, sp.from.Sub(ft.At).Round(time.Millisecond), sp.to.Sub(ft.At).Round(time.Millisecond),
					sp.syncNames, sp.syncStandbys)
			}
			t.Logf("  %s %s after %s (%s), first claim %s later (service): %s in all; formation settled after %s",
				next.name, cmp.Or(map[string]string{faultCut: "reachable again", faultSlots: "had free slots again"}[kind], "accepted writes"),
				ft.HAPart().Round(time.Millisecond), ft.outagePart(), ft.ServicePart().Round(time.Millisecond),
				ft.Window().Round(time.Millisecond), ft.Stable.Sub(ft.At).Round(time.Millisecond))
			faults = append(faults, ft)
		}
	}
	f.waitStable(3*time.Minute, nil)
	time.Sleep(3 * time.Second)
	stopClients()
	checkLeases(t, leases, !async)
	for _, r := range replicas {
		if !r.alive() {
			errorf(t, "replica %s died", r.url)
		}
		// Each refusal is logged with the request it failed (or the
		// background job's pass).
		if n := strings.Count(r.log.String(), store.ErrSynchronousStandbysMissing.Error()); n > 0 {
			t.Logf("replica %s: %d log lines of connections refused to a server missing its synchronous standbys", r.url, n)
		}
	}

	history, overlaps := readHistory(t, dbURL)
	rep := check(log.snapshot(), history, faults)
	for _, o := range overlaps {
		rep.DoubleHolders = append(rep.DoubleHolders, finding{-1, "history (KeyEventsOverlappingLeases): " + o})
	}
	for _, finding := range rep.answerFindings() {
		errorf(t, "%v", finding)
	}
	var windows []string
	for i, ft := range faults {
		p := rep.byFault(len(faults))[i]
		windows = append(windows, fmt.Sprintf("  %d. %s: %s → %s, %s %s + service %s = %s; "+
			"double holders %d, tokens out of order %d, acknowledged lost %d (claims %d, releases %d, keep-alives %d), leases taken away %d",
			i+1, ft.Kind, ft.OldPrimary, ft.NewPrimary, ft.outagePart(), ft.HAPart().Round(time.Millisecond),
			ft.ServicePart().Round(time.Millisecond), ft.Window().Round(time.Millisecond),
			p.DoubleHolders, p.TokenOrder, p.lost(), p.LostClaims, p.LostReleases, p.LostKeepAlives, p.LeasesTakenAway))
	}
	t.Logf("%s replication, %d failovers, %s: %d claims, %d keep-alives, %d releases acknowledged; %d answers 503; "+
		"%d releases retried after their commit; %d leases ended by the job; "+
		"double holders %d, tokens out of order %d, acknowledged lost: %d claims, %d releases, %d keep-alives; leases taken away %d\n%s",
		mode, len(faults), time.Since(started).Round(time.Second), rep.Claims, rep.KeepAlives, rep.Releases, rep.Unavailable,
		rep.ReleasesRetriedAfterCommit, rep.LeasesRunOut,
		len(rep.DoubleHolders), len(rep.TokenOrder), len(rep.LostClaims), len(rep.LostReleases), len(rep.LostKeepAlives),
		len(rep.LeasesTakenAway), strings.Join(windows, "\n"))
	if rep.Claims == 0 {
		errorf(t, "no claim was acknowledged")
	}
	return result{faults: faults, report: rep}
}

// replicationMode reads the mode the replica's metric says is 1.
func replicationMode(t *testing.T, r *replica) string {
	t.Helper()
	resp, err := http.Get(r.url + "/metrics")
	if err != nil {
		fatalf(t, "%v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		fatalf(t, "%v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, `tokenorchestrator_db_replication_mode{mode="`); ok && strings.HasSuffix(rest, "} 1") {
			return strings.TrimSuffix(rest, `"} 1`)
		}
	}
	return "none exported"
}

// readHistory reads the pool's history from the primary, and the
// overlapping leases the service's own audit finds in it.
func readHistory(t *testing.T, dbURL string) ([]event, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		fatalf(t, "%v", err)
	}
	defer db.Close()
	rows, err := db.Query(ctx, `SELECT id, at, key_id::text, coalesce(seat, 0)::int, event, coalesce(lease_token, 0)
		FROM key_events WHERE pool = $1 ORDER BY id`, pool)
	if err != nil {
		fatalf(t, "%v", err)
	}
	history, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (event, error) {
		var e event
		err := row.Scan(&e.ID, &e.At, &e.Key, &e.Seat, &e.Event, &e.Token)
		return e, err
	})
	if err != nil {
		fatalf(t, "%v", err)
	}
	audit, err := store.New(db, store.Config{}).AuditHistory(ctx, time.Now().Add(-time.Hour))
	if err != nil {
		fatalf(t, "%v", err)
	}
	var overlaps []string
	for _, o := range audit.Overlaps {
		overlaps = append(overlaps, fmt.Sprintf("key %s: lease %d overlaps lease %d", o.KeyID, deref(o.First), deref(o.Second)))
	}
	slices.Sort(overlaps)
	return history, overlaps
}

// writeClientLog keeps the clients' log of a failed test, one JSON object
// per attempt.
func writeClientLog(t *testing.T, attempts []attempt) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, a := range attempts {
		_ = enc.Encode(a)
	}
	_ = os.WriteFile(filepath.Join(keepDir(t), "clients.jsonl"), buf.Bytes(), 0o644)
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
