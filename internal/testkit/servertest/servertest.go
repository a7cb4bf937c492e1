// Package servertest runs real replicas of the service, assembled by
// internal/server exactly as the binary does, on a test database, for the
// tests of code that talks to the service over HTTP (the Go client, whose
// tests are in test/goclient, and the command line).
//
// A package that uses it needs testdb's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }
package servertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/server"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

// Options adjusts the replica; zero values keep the defaults of the binary,
// except that the background job runs every 50ms.
type Options struct {
	// DatabaseURL to use; empty: a fresh database of the test's own.
	DatabaseURL   string
	KeyTTL        time.Duration
	LeaseTTL      time.Duration
	SweepInterval time.Duration
	// DBTimeout bounds every database call; short for tests of an
	// unreachable database.
	DBTimeout time.Duration
	// Configure, when set, adjusts the configuration last: tokens, HTTP
	// timeouts, anything the binary reads from its settings.
	Configure func(*config.Config)
}

// Replica is a replica running for a test.
type Replica struct {
	// URL is the replica's base URL.
	URL string
	db  *tcpProxy
}

// Start runs a replica until the test ends. Its connections to the database
// go through a proxy, so that the test can take the database away.
func Start(t testing.TB, o Options) *Replica {
	t.Helper()
	if o.DatabaseURL == "" {
		o.DatabaseURL = testdb.New(t)
	}
	proxied, db, err := proxyDatabase(o.DatabaseURL)
	if err != nil {
		t.Fatalf("proxy to the test database: %v", err)
	}
	t.Cleanup(db.close)
	o.DatabaseURL = proxied
	logs := &testLog{t: t}
	ctx, cancel := context.WithCancel(context.Background())
	url, done, err := start(ctx, o, logs)
	if err != nil {
		cancel()
		t.Fatalf("start a replica: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		<-done
		logs.end()
	})
	return &Replica{URL: url, db: db}
}

// CutDatabase takes the database away from the replica, as a network
// failure would: its connections are broken and new ones refused until
// RestoreDatabase.
func (r *Replica) CutDatabase() { r.db.cut() }

// RestoreDatabase gives the database back.
func (r *Replica) RestoreDatabase() { r.db.restore() }

// StartShared runs a replica on a database of its own until the test binary
// ends, for a TestMain to set up what examples talk to.
func StartShared(o Options) (string, error) {
	if o.DatabaseURL == "" {
		var err error
		if o.DatabaseURL, err = testdb.Shared(); err != nil {
			return "", err
		}
	}
	url, _, err := start(context.Background(), o, io.Discard)
	return url, err
}

// start serves until ctx ends; done is closed once the replica has stopped.
// Its warnings and errors go to logs.
func start(ctx context.Context, o Options, logs io.Writer) (string, <-chan struct{}, error) {
	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		return "", nil, err
	}
	cfg.DatabaseURL = o.DatabaseURL
	cfg.SweepInterval = 50 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.DrainDelay = 0
	cfg.DBMaxConns = 8
	for _, setting := range []struct {
		value time.Duration
		field *time.Duration
	}{
		{o.KeyTTL, &cfg.KeyTTL}, {o.LeaseTTL, &cfg.LeaseTTL},
		{o.SweepInterval, &cfg.SweepInterval}, {o.DBTimeout, &cfg.DBTimeout},
	} {
		if setting.value > 0 {
			*setting.field = setting.value
		}
	}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(ctx, cfg, logger)
	if err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ctx, l)
	}()
	return fmt.Sprintf("http://%s", l.Addr()), done, nil
}

// testLog writes a replica's log lines to its test's log, which go test
// prints when the test fails: a 503 or a failed background pass then says
// why. Lines written after the test has ended are dropped, as testing
// forbids logging then.
type testLog struct {
	t     testing.TB
	mu    sync.Mutex
	ended bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ended {
		l.t.Log("replica: " + strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ended = true
}
