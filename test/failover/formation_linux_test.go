package failover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
)

// database is the database the service uses on the formation's nodes.
const database = "tokens"

// rootPrefix names the temporary directories of formations, so that one
// left behind by a run that was killed can be found and stopped.
const rootPrefix = "failover-formation-"

// formation is a pg_auto_failover monitor and two Postgres nodes on
// loopback, each run by `pg_autoctl ... --run` as the postgres user in a
// process group of its own, under one temporary directory.
type formation struct {
	t    *testing.T
	root string
	// bin is the directory of pg_ctl of the PostgreSQL major version that
	// pg_auto_failover's extension is installed for.
	bin        string
	credential *syscall.Credential
	uid, gid   int
	env        []string

	monitor    *process
	monitorURI string
	nodes      []*node

	mu sync.Mutex
	// processes are every pg_autoctl started, stopped in reverse order.
	processes []*process
}

// node is one Postgres node of the formation.
type node struct {
	name string
	port int
	dir  string
	proc *process
}

// process is a `pg_autoctl ... --run`: a supervisor whose children (the
// keeper, Postgres and its backends) share its process group.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// async: every node is created with --replication-quorum false, so that
// the primary never waits for a standby (synchronous_standby_names is
// empty); otherwise pg_auto_failover's default, ANY 1 standby.
func startFormation(t *testing.T, async bool) *formation {
	t.Helper()
	begun := time.Now()
	f := &formation{t: t}
	f.findBinaries()
	f.sweepLeftovers()
	var err error
	if f.root, err = os.MkdirTemp("", rootPrefix); err != nil {
		fatalf(t, "%v", err)
	}
	// Cleanups run last-in first-out: the directory goes after every
	// process that uses it has stopped.
	t.Cleanup(func() {
		if err := os.RemoveAll(f.root); err != nil {
			errorf(t, "removing %s: %v", f.root, err)
		}
	})
	t.Cleanup(f.stop)
	// Before the stop, while the monitor still answers.
	t.Cleanup(func() {
		if keepLogs(t) {
			f.logTails(keepDir(t))
		}
	})
	// The owner's pid, for sweepLeftovers of a later run: only a formation
	// whose test process is gone is stopped.
	if err := os.WriteFile(filepath.Join(f.root, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		fatalf(t, "%v", err)
	}
	// The postgres user makes the data directories in it.
	if err := os.Chmod(f.root, 0o755); err != nil {
		fatalf(t, "%v", err)
	}
	if err := os.Chown(f.root, f.uid, f.gid); err != nil {
		fatalf(t, "%v", err)
	}
	sockets := filepath.Join(f.root, "sockets")
	home := filepath.Join(f.root, "home")
	// Without its runtime directory, pg_autoctl keeps its pid files under
	// /tmp/pg_autoctl, outside the test's directory.
	for _, dir := range []string{sockets, home, filepath.Join(home, "run"), filepath.Join(home, "config"), filepath.Join(home, "share")} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			fatalf(t, "%v", err)
		}
		if err := os.Chown(dir, f.uid, f.gid); err != nil {
			fatalf(t, "%v", err)
		}
	}
	// pg_autoctl keeps its configuration and state under XDG directories of
	// the user's home, and Postgres its sockets under
	// PG_REGRESS_SOCK_DIR: all of it in the test's directory, none in the
	// postgres user's home or in /var/run/postgresql. PGHOST tells
	// pg_autoctl's own local connections where the sockets are.
	f.env = []string{
		"PATH=" + f.bin + ":/usr/bin:/bin",
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"),
		"XDG_DATA_HOME=" + filepath.Join(home, "share"),
		"XDG_RUNTIME_DIR=" + filepath.Join(home, "run"),
		"PG_REGRESS_SOCK_DIR=" + sockets,
		"PGHOST=" + sockets,
		"LANG=C.UTF-8",
	}

	monitorDir := filepath.Join(f.root, "monitor")
	monitorPort := freePort(t)
	f.monitor = f.start("monitor", "create", "monitor", "--pgdata", monitorDir, "--pgport", strconv.Itoa(monitorPort),
		"--pgctl", filepath.Join(f.bin, "pg_ctl"), "--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--run")
	// The monitor is polled over SQL until its extension answers, and only
	// then asked for its URI: two pg_autoctl processes making their
	// configuration directories at once fail ("File exists").
	f.monitorURI = fmt.Sprintf("postgres://autoctl_node@127.0.0.1:%d/pg_auto_failover?sslmode=prefer", monitorPort)
	f.waitFor("the monitor", 60*time.Second, func() error {
		_, err := f.states(context.Background())
		return err
	})
	out, err := f.autoctl("show", "uri", "--pgdata", monitorDir, "--formation", "monitor")
	if err != nil {
		fatalf(t, "%v", err)
	}
	if uri := strings.TrimSpace(out); strings.HasPrefix(uri, "postgres://") {
		f.monitorURI = uri
	}
	t.Logf("monitor up after %s", time.Since(begun).Round(time.Millisecond))

	quorum := "true"
	if async {
		quorum = "false"
	}
	for i := 1; i <= 2; i++ {
		n := &node{name: fmt.Sprintf("node%d", i), port: freePort(t)}
		n.dir = filepath.Join(f.root, n.name)
		n.proc = f.start(n.name, "create", "postgres", "--pgdata", n.dir, "--pgport", strconv.Itoa(n.port),
			"--pgctl", filepath.Join(f.bin, "pg_ctl"), "--name", n.name, "--dbname", database,
			"--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--monitor", f.monitorURI,
			"--replication-quorum", quorum, "--run")
		f.nodes = append(f.nodes, n)
		if i == 1 {
			// The first node is the primary: the second is made a standby
			// of it only once it runs alone.
			f.waitFor("node1 to run as a single node", 2*time.Minute, func() error {
				states, err := f.states(context.Background())
				if err != nil {
					return err
				}
				if s := states["node1"]; s.reported != "single" {
					return fmt.Errorf("node1 is %q", s.reported)
				}
				return nil
			})
			t.Logf("node1 runs alone after %s", time.Since(begun).Round(time.Millisecond))
			// The standby is copied with pg_basebackup, which starts with
			// a spread checkpoint: writing the new cluster's dirty buffers
			// at that pace took a minute and a half. An immediate
			// checkpoint first leaves it almost nothing to write.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", n.port))
			if err == nil {
				_, err = conn.Exec(ctx, "CHECKPOINT")
				_ = conn.Close(ctx)
			}
			cancel()
			if err != nil {
				fatalf(t, "checkpoint on node1: %v", err)
			}
		}
	}
	f.waitStable(3*time.Minute, nil)
	return f
}

// findBinaries finds pg_autoctl, the postgres user, and the PostgreSQL whose
// extension directory holds pg_auto_failover's.
func (f *formation) findBinaries() {
	t := f.t
	if _, err := exec.LookPath("pg_autoctl"); err != nil {
		fatalf(t, "%v", "pg_autoctl is not installed: apt-get install postgresql-15-auto-failover pg-auto-failover-cli "+
			"(make test-failover installs them when run as root)")
	}
	controls, _ := filepath.Glob("/usr/share/postgresql/*/extension/pgautofailover.control")
	for _, control := range controls {
		version := filepath.Base(filepath.Dir(filepath.Dir(control)))
		bin := filepath.Join("/usr/lib/postgresql", version, "bin")
		if _, err := os.Stat(filepath.Join(bin, "pg_ctl")); err == nil {
			f.bin = bin
		}
	}
	if f.bin == "" {
		fatalf(t, "%v", "no PostgreSQL with pg_auto_failover's extension was found "+
			"(/usr/share/postgresql/*/extension/pgautofailover.control): apt-get install postgresql-15-auto-failover")
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		fatalf(t, "the formation runs as the postgres user, and there is none: %v", err)
	}
	f.uid, _ = strconv.Atoi(pg.Uid)
	f.gid, _ = strconv.Atoi(pg.Gid)
	switch os.Geteuid() {
	case f.uid:
	case 0:
		f.credential = &syscall.Credential{Uid: uint32(f.uid), Gid: uint32(f.gid)}
	default:
		fatalf(t, "%v", "the formation runs as the postgres user: run the test as root or as postgres")
	}
}

// sweepLeftovers stops the formations of earlier runs whose test process
// is gone (a run killed before its cleanups ran) and removes their
// directories. A formation whose owner still runs, another run's, is left
// alone.
func (f *formation) sweepLeftovers() {
	roots, _ := filepath.Glob(filepath.Join(os.TempDir(), rootPrefix+"*"))
	for _, root := range roots {
		owner, err := os.ReadFile(filepath.Join(root, "owner"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(string(owner)); err == nil && syscall.Kill(pid, 0) == nil {
			continue
		}
		groups, _ := filepath.Glob(filepath.Join(root, "*.pgid"))
		for _, g := range groups {
			raw, err := os.ReadFile(g)
			pgid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
			// Only a group whose leader still runs pg_autoctl on this
			// directory: a pid may have been reused since.
			if err != nil || pgid <= 1 || !strings.Contains(cmdline(pgid), root) {
				continue
			}
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		// Postgres processes whose pg_autoctl died before them.
		pids, _ := filepath.Glob(filepath.Join(root, "*", "postmaster.pid"))
		for _, p := range pids {
			if pid := postmasterPID(p); pid > 1 && strings.Contains(cmdline(pid), root) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		f.t.Logf("removed the formation of an earlier run that was killed: %s", root)
		_ = os.RemoveAll(root)
	}
}

// keepLogs: a failed test keeps its logs, and so does every test with
// FAILOVER_KEEP_LOGS set, for a closer look at a run that passed.
func keepLogs(t *testing.T) bool { return t.Failed() || os.Getenv("FAILOVER_KEEP_LOGS") != "" }

// keepDir returns the directory, made once per test, where a test leaves
// its logs for a closer look.
func keepDir(t *testing.T) string {
	keepMu.Lock()
	defer keepMu.Unlock()
	if dir, ok := keepDirs[t.Name()]; ok {
		return dir
	}
	dir, err := os.MkdirTemp("", "failover-logs-")
	if err != nil {
		t.Logf("no directory for the logs: %v", err)
		return os.TempDir()
	}
	t.Logf("the logs of the formation, the replicas and the clients are kept in %s", dir)
	keepDirs[t.Name()] = dir
	return dir
}

var (
	keepMu   sync.Mutex
	keepDirs = map[string]string{}
)

func cmdline(pid int) string {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(bytes.ReplaceAll(raw, []byte{0}, []byte{' '}))
}

// postmasterPID reads the first line of a postmaster.pid file; 0 when
// there is none.
func postmasterPID(path string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// sysProcAttr runs a command as the postgres user; group puts it in a
// process group of its own, which stop kills whole. The kernel stops it if
// the test process dies first.
func (f *formation) sysProcAttr(group bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: f.credential, Setpgid: group, Pdeathsig: syscall.SIGKILL}
}

// start runs `pg_autoctl args...` in the background, its output in
// name.log under the root.
func (f *formation) start(name string, args ...string) *process {
	f.t.Helper()
	p := &process{name: name, log: filepath.Join(f.root, name+".log"), done: make(chan struct{})}
	out, err := os.Create(p.log)
	if err != nil {
		fatalf(f.t, "%v", err)
	}
	p.cmd = exec.Command("pg_autoctl", args...)
	p.cmd.Dir = f.root
	p.cmd.Env = f.env
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = f.sysProcAttr(true)
	if err := p.cmd.Start(); err != nil {
		out.Close()
		fatalf(f.t, "pg_autoctl %s: %v", strings.Join(args, " "), err)
	}
	_ = os.WriteFile(filepath.Join(f.root, name+".pgid"), []byte(strconv.Itoa(p.cmd.Process.Pid)), 0o644)
	go func() {
		_ = p.cmd.Wait()
		out.Close()
		close(p.done)
	}()
	f.mu.Lock()
	f.processes = append(f.processes, p)
	f.mu.Unlock()
	return p
}

// autoctl runs a pg_autoctl command to its end and returns its output.
func (f *formation) autoctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pg_autoctl", args...)
	cmd.Dir = f.root
	cmd.Env = f.env
	cmd.SysProcAttr = f.sysProcAttr(false)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("pg_autoctl %s: %w: %s", strings.Join(args, " "), err, lastLines(string(out), 5))
	}
	return string(out), nil
}

// stop ends every pg_autoctl, nodes first: a fast stop (SIGINT, which
// pg_autoctl passes on to Postgres), then SIGKILL to whatever is left of
// each process group. Any Postgres still running on the root's data
// directories is killed too.
func (f *formation) stop() {
	f.mu.Lock()
	processes := f.processes
	f.processes = nil
	f.mu.Unlock()
	for i := len(processes) - 1; i >= 0; i-- {
		p := processes[i]
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			f.t.Logf("pg_autoctl %s did not stop within 20 s of SIGINT; killing its process group", p.name)
		}
		// The group's other members (a Postgres that outlived its
		// supervisor) go too.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	pids, _ := filepath.Glob(filepath.Join(f.root, "*", "postmaster.pid"))
	for _, path := range pids {
		if pid := postmasterPID(path); pid > 1 && strings.Contains(cmdline(pid), f.root) {
			f.t.Logf("killing Postgres %d left running on %s", pid, filepath.Dir(path))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// logTails logs the end of every pg_autoctl log and the monitor's events,
// for a failed test, and copies every log of the formation (pg_autoctl's
// and Postgres's) and the monitor's events to keep, which outlives the
// test.
func (f *formation) logTails(keep string) {
	if f.monitor != nil {
		if out, err := f.autoctl("show", "events", "--pgdata", filepath.Join(f.root, "monitor"), "--count", "200"); err == nil {
			f.t.Logf("the monitor's last events:\n%s", lastLines(out, 40))
			_ = os.WriteFile(filepath.Join(keep, "monitor-events.txt"), []byte(out), 0o644)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(f.root, "*.log"))
	for _, l := range logs {
		raw, _ := os.ReadFile(l)
		f.t.Logf("end of %s:\n%s", filepath.Base(l), lastLines(string(raw), 30))
	}
	postgres, _ := filepath.Glob(filepath.Join(f.root, "*", "log", "*"))
	for _, l := range append(logs, postgres...) {
		raw, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		name := strings.ReplaceAll(strings.TrimPrefix(l, f.root+"/"), "/", "-")
		_ = os.WriteFile(filepath.Join(keep, name), raw, 0o644)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls check until it succeeds, failing the test after limit: a
// bound that only a hang should reach.
func (f *formation) waitFor(what string, limit time.Duration, check func() error) {
	f.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		for _, p := range f.processes {
			select {
			case <-p.done:
				fatalf(f.t, "waiting for %s: pg_autoctl %s exited; its log:\n%s", what, p.name, tailFile(p.log, 40))
			default:
			}
		}
		if time.Now().After(deadline) {
			fatalf(f.t, "%s: not within %s: %v", what, limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tailFile(path string, n int) string {
	raw, _ := os.ReadFile(path)
	return lastLines(string(raw), n)
}

// nodeState is what the monitor knows of a node.
type nodeState struct {
	port               int
	reported, assigned string
	healthy            bool
}

// states reads the monitor's view of the nodes, by name.
func (f *formation) states(ctx context.Context) (map[string]nodeState, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.monitorURI+"&connect_timeout=3")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT nodename, nodeport, reportedstate::text, goalstate::text, health = 1 FROM pgautofailover.node")
	if err != nil {
		return nil, err
	}
	out := map[string]nodeState{}
	for rows.Next() {
		var name string
		var s nodeState
		if err := rows.Scan(&name, &s.port, &s.reported, &s.assigned, &s.healthy); err != nil {
			return nil, err
		}
		out[name] = s
	}
	return out, rows.Err()
}

// waitStable waits until one node is primary and the other secondary, as
// reported and as assigned, both healthy, and returns the primary. After a
// fault, not is the old primary: the monitor may not have noticed the
// fault yet, and the formation still looks as it was before.
func (f *formation) waitStable(limit time.Duration, not *node) *node {
	f.t.Helper()
	var primary *node
	what := "a primary and a secondary"
	if not != nil {
		what = "a primary other than " + not.name + " and a secondary"
	}
	f.waitFor(what, limit, func() error {
		var err error
		if primary, err = f.stablePrimary(); err != nil {
			return err
		}
		if primary == not {
			return fmt.Errorf("%s is still primary", not.name)
		}
		return nil
	})
	return primary
}

// stablePrimary returns the primary while one node is primary and the
// others secondary, as reported and as assigned, all healthy.
func (f *formation) stablePrimary() (*node, error) {
	states, err := f.states(context.Background())
	if err != nil {
		return nil, err
	}
	var primary *node
	var secondaries int
	for _, n := range f.nodes {
		s := states[n.name]
		switch {
		case !s.healthy:
			return nil, fmt.Errorf("%s is not healthy (%s, assigned %s)", n.name, s.reported, s.assigned)
		case s.reported == "primary" && s.assigned == "primary":
			primary = n
		case s.reported == "secondary" && s.assigned == "secondary":
			secondaries++
		default:
			return nil, fmt.Errorf("%s is %s, assigned %s", n.name, s.reported, s.assigned)
		}
	}
	if primary == nil || secondaries != len(f.nodes)-1 {
		return nil, errors.New("no primary yet")
	}
	return primary, nil
}

// waitAfterKill waits, after the postmaster of the primary old (pid
// killed) was killed, until the formation is stable again, and returns its
// primary: another node after a failover, or old itself when its keeper
// restarted Postgres before the monitor failed it over. The latter is
// taken only once the formation has looked so for 15 s: a failover may
// still start meanwhile.
func (f *formation) waitAfterKill(limit time.Duration, old *node, killed int) *node {
	f.t.Helper()
	var (
		primary   *node
		sameSince time.Time
	)
	f.waitFor("the formation to settle after the kill", limit, func() error {
		var err error
		if primary, err = f.stablePrimary(); err != nil {
			sameSince = time.Time{}
			return err
		}
		if primary != old {
			return nil
		}
		if pid := postmasterPID(filepath.Join(old.dir, "postmaster.pid")); pid <= 1 || pid == killed {
			sameSince = time.Time{}
			return fmt.Errorf("%s has not restarted", old.name)
		}
		if sameSince.IsZero() {
			sameSince = time.Now()
		}
		if time.Since(sameSince) < 15*time.Second {
			return fmt.Errorf("%s restarted and is primary again for %s", old.name, time.Since(sameSince).Round(time.Second))
		}
		return nil
	})
	return primary
}

// databaseURL is the URL the service is given: both nodes, and only a
// session that may write is kept.
func (f *formation) databaseURL() string {
	return f.databaseURLVia(f.nodes[0].port, f.nodes[1].port)
}

// databaseURLVia is databaseURL with the nodes reached at other ports (a
// proxy's), in the order of f.nodes.
func (f *formation) databaseURLVia(ports ...int) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/%s?sslmode=disable&target_session_attrs=read-write",
		ports[0], ports[1], database)
}

// nodeURL is the URL of one node alone.
func (n *node) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=2", n.port, database)
}

// killPostmaster kills the node's postmaster with SIGKILL, as a crash of
// Postgres would end it, and returns its pid; its keeper is left running.
func (f *formation) killPostmaster(n *node) int {
	f.t.Helper()
	pid := postmasterPID(filepath.Join(n.dir, "postmaster.pid"))
	if pid <= 1 {
		fatalf(f.t, "no postmaster.pid in %s", n.dir)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		fatalf(f.t, "kill -9 %d: %v", pid, err)
	}
	return pid
}

// switchover asks the monitor to make the secondary the primary, and
// returns once pg_autoctl says it is done.
func (f *formation) switchover() error {
	_, err := f.autoctl("perform", "switchover", "--pgdata", filepath.Join(f.root, "monitor"))
	return err
}

// replicationSettings reads, on the node, what the service's metric reads:
// synchronous_standby_names and the standbys' sync_state.
func replicationSettings(ctx context.Context, n *node) (string, []string, error) {
	conn, err := pgx.Connect(ctx, n.url())
	if err != nil {
		return "", nil, err
	}
	defer conn.Close(context.Background())
	var names string
	if err := conn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&names); err != nil {
		return "", nil, err
	}
	rows, err := conn.Query(ctx, "SELECT sync_state FROM pg_stat_replication")
	if err != nil {
		return "", nil, err
	}
	states, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return names, states, err
}

func freePort(t *testing.T) int {
	port, err := pgembed.FreePort()
	if err != nil {
		fatalf(t, "a free port: %v", err)
	}
	return port
}
