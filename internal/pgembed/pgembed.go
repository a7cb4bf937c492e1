// Package pgembed runs a PostgreSQL cluster owned by this program, from the
// PostgreSQL binaries installed on the machine: the default database when no
// DATABASE_URL is given, and the fallback database of the tests.
//
// The cluster listens on loopback TCP only. Its data directory survives
// restarts; a first start creates it with initdb. PostgreSQL refuses to run
// as root, so when this program is root the cluster runs as the "postgres"
// system user.
//
// What differs between operating systems (whom the server runs as, how it
// is signalled, whether it dies with this program) is in the process_*.go
// and procattr_*.go files; only Linux is tested.
package pgembed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Config describes a cluster.
type Config struct {
	// DataDir is the cluster's data directory. It is created on first start.
	DataDir string
	// Port on 127.0.0.1; zero picks a free one.
	Port int
	// BinDir holds initdb and postgres; empty looks in the usual places.
	BinDir string
	// Settings are extra server settings (name → value).
	Settings map[string]string
	// StandbyOf, when set, is the URL of a running primary: a first start
	// copies its cluster with pg_basebackup instead of running initdb, and
	// the server runs as a streaming hot standby of it (pg_basebackup -R
	// writes standby.signal and primary_conninfo). The primary needs no
	// setting for it: initdb's defaults (wal_level=replica, max_wal_senders,
	// and a pg_hba.conf that with --auth=trust trusts replication from
	// loopback) allow it.
	StandbyOf string
	// StartTimeout bounds start-up; zero means 60 seconds.
	StartTimeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Cluster is a running PostgreSQL.
type Cluster struct {
	cfg     Config
	binDir  string
	cmd     *exec.Cmd
	exited  chan struct{}
	logFile *os.File
	port    int
}

// Start starts the cluster, creating it first if DataDir holds none, and
// waits until it accepts connections. If a server from an earlier run of
// this program still runs on DataDir, Start uses it and Stop leaves it be.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = dataDir
	binDir, err := findBinDir(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	if port, ok := runningPort(cfg.DataDir); ok {
		c := &Cluster{cfg: cfg, binDir: binDir, port: port}
		if err := c.waitReady(ctx); err == nil {
			cfg.Logger.Info("using the embedded PostgreSQL already running", "data_dir", cfg.DataDir, "port", port)
			return c, nil
		}
	}
	if err := initCluster(ctx, binDir, cfg.DataDir, cfg.StandbyOf, cred, cfg.Logger); err != nil {
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	logPath := cfg.DataDir + ".log"
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the PostgreSQL log: %w", err)
	}
	args := []string{"-D", cfg.DataDir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="}
	names := make([]string, 0, len(cfg.Settings))
	for name := range cfg.Settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		args = append(args, "-c", name+"="+cfg.Settings[name])
	}
	cmd := exec.Command(filepath.Join(binDir, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = serverProcAttr(cred)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c := &Cluster{cfg: cfg, binDir: binDir, cmd: cmd, exited: make(chan struct{}), logFile: logFile, port: port}
	go func() { _ = cmd.Wait(); close(c.exited) }()
	if err := c.waitReady(ctx); err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("embedded PostgreSQL did not start (log: %s): %w\n%s", logPath, err, tail(logPath))
	}
	cfg.Logger.Info("embedded PostgreSQL started", "data_dir", cfg.DataDir, "port", port)
	return c, nil
}

// shutdownMode is how the server is asked to stop.
type shutdownMode int

const (
	// fastShutdown ends open sessions and keeps everything committed.
	fastShutdown shutdownMode = iota
	// immediateShutdown stops at once; the next start runs crash recovery.
	immediateShutdown
)

// URL is the connection URL of the cluster's postgres database.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Port is the cluster's TCP port.
func (c *Cluster) Port() int { return c.port }

// Stop shuts the cluster down cleanly (a fast shutdown: open sessions are
// ended, everything committed is kept) and waits for it.
func (c *Cluster) Stop() error {
	if c.cmd == nil {
		return nil
	}
	defer c.logFile.Close()
	_ = c.shutDown(fastShutdown)
	select {
	case <-c.exited:
		return nil
	case <-time.After(30 * time.Second):
	}
	// Immediate shutdown: crash recovery at the next start.
	_ = c.shutDown(immediateShutdown)
	select {
	case <-c.exited:
		return errors.New("embedded PostgreSQL needed an immediate shutdown")
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return errors.New("embedded PostgreSQL had to be killed")
	}
}

// StopImmediate stops the cluster as abruptly as PostgreSQL allows short of
// a crash (pg_ctl stop -m immediate): sessions are cut, nothing is
// checkpointed, and the next start runs crash recovery. Tests use it to
// play a database outage.
func (c *Cluster) StopImmediate() error {
	if c.cmd == nil {
		return errors.New("this cluster was not started here")
	}
	defer c.logFile.Close()
	_ = c.shutDown(immediateShutdown)
	select {
	case <-c.exited:
		return nil
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return errors.New("embedded PostgreSQL had to be killed")
	}
}

func (c *Cluster) waitReady(ctx context.Context) error {
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attempt, c.URL())
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-c.exitedChan():
			return errors.New("postgres exited")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) exitedChan() <-chan struct{} {
	if c.exited == nil {
		return nil
	}
	return c.exited
}

// initCluster runs initdb, or pg_basebackup from standbyOf, unless dataDir
// already holds a cluster. It builds the cluster beside dataDir and renames
// it into place, so that a start that failed halfway never leaves a
// half-made data directory behind.
func initCluster(ctx context.Context, binDir, dataDir, standbyOf string, cred *credential, logger *slog.Logger) error {
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err == nil {
		return nil
	}
	if entries, err := os.ReadDir(dataDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s is not empty but holds no PostgreSQL cluster; move it away", dataDir)
	}
	building := dataDir + ".initdb"
	if err := os.RemoveAll(building); err != nil {
		return err
	}
	// The parent must be traversable by the server's user, which is not
	// this process's user when running as root.
	if err := os.MkdirAll(filepath.Dir(building), 0o755); err != nil {
		return fmt.Errorf("create the data directory: %w", err)
	}
	if err := os.Mkdir(building, 0o700); err != nil {
		return fmt.Errorf("create the data directory: %w", err)
	}
	if cred != nil {
		if err := reachable(filepath.Dir(building), cred); err != nil {
			_ = os.Remove(building)
			return err
		}
		if err := os.Chown(building, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	var cmd *exec.Cmd
	if standbyOf == "" {
		logger.Info("creating the embedded PostgreSQL cluster", "data_dir", dataDir)
		cmd = exec.CommandContext(ctx, filepath.Join(binDir, "initdb"),
			"-D", building, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	} else {
		logger.Info("copying the primary for a standby", "data_dir", dataDir)
		// A fast checkpoint: the copy starts at once instead of at the
		// primary's next scheduled checkpoint.
		cmd = exec.CommandContext(ctx, filepath.Join(binDir, "pg_basebackup"),
			"-D", building, "-d", standbyOf, "-R", "--checkpoint=fast", "--no-sync")
	}
	cmd.SysProcAttr = initdbProcAttr(cred)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		_ = os.RemoveAll(building)
		return fmt.Errorf("%s: %w\n%s", filepath.Base(cmd.Path), err, out.String())
	}
	_ = os.Remove(dataDir) // an empty directory left by an earlier attempt
	return os.Rename(building, dataDir)
}

// runningPort returns the port of a server that runs on dataDir now.
func runningPort(dataDir string) (int, bool) {
	raw, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(raw), "\n")
	if len(lines) < 4 {
		return 0, false
	}
	pid, err1 := strconv.Atoi(strings.TrimSpace(lines[0]))
	port, err2 := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err1 != nil || err2 != nil || pid <= 0 {
		return 0, false
	}
	if !processExists(pid) {
		return 0, false
	}
	return port, true
}

// Installed reports why no PostgreSQL server binaries can be found, or nil
// when they can: tests that start their own clusters check it first.
func Installed() error {
	_, err := findBinDir("")
	return err
}

// findBinDir looks for a directory holding initdb and postgres.
func findBinDir(configured string) (string, error) {
	var candidates []string
	if configured != "" {
		candidates = append(candidates, configured)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		candidates = append(candidates, filepath.Dir(path))
	}
	for _, pattern := range binDirPatterns {
		matches, _ := filepath.Glob(pattern)
		sort.Sort(sort.Reverse(sort.StringSlice(matches))) // newest version first
		candidates = append(candidates, matches...)
	}
	for _, dir := range candidates {
		if isFile(filepath.Join(dir, "initdb"+exeSuffix)) && isFile(filepath.Join(dir, "postgres"+exeSuffix)) {
			return dir, nil
		}
	}
	if configured != "" {
		return "", fmt.Errorf("no initdb and postgres in %s", configured)
	}
	return "", errors.New("no PostgreSQL server binaries found (looked for initdb and postgres): install PostgreSQL (e.g. apt-get install postgresql, brew install postgresql) or set DATABASE_URL")
}

func isFile(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir()
}

// FreePort returns a loopback TCP port that nothing listened on a moment
// ago: for a cluster, or a test's or the bench's server, to listen on.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 2000
	if info, err := f.Stat(); err == nil && info.Size() > max {
		_, _ = f.Seek(-max, io.SeekEnd)
	}
	raw, _ := io.ReadAll(f)
	return string(raw)
}

// PID is the postmaster's process id; 0 when Start found a server of an
// earlier run already running on DataDir.
func (c *Cluster) PID() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}
