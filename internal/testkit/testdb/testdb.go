// Package testdb gives every test its own freshly migrated PostgreSQL
// database, so that tests run in parallel without seeing each other's keys.
//
// The server is chosen once per test binary, in this order:
//  1. TEST_DATABASE_URL, a server where the URL's user may create databases;
//  2. a PostgreSQL already running on 127.0.0.1:5432 (user postgres);
//  3. an embedded cluster started from the PostgreSQL binaries installed on
//     the machine (stopped again when the tests end);
//  4. a PostgreSQL container, through testcontainers, when Docker runs.
//
// When none is available the tests fail with a message saying what to
// install; they never skip silently. TEST_DATABASE=embedded or
// TEST_DATABASE=container forces a choice.
//
// Each test database is copied from a template database that holds the
// migrated schema; the template is built once per schema version.
//
// A failed test keeps its database, and its log gives the URL: open it with
// psql to see what the test saw (drop such databases by hand). A passing
// test's database is dropped without FORCE, so a connection that the test
// left open fails the test.
package testdb

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/tokenorchestrator/tokenorchestrator/internal/migrate"
	"github.com/tokenorchestrator/tokenorchestrator/internal/pgembed"
	"github.com/tokenorchestrator/tokenorchestrator/migrations"
)

const localURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var (
	serverOnce sync.Once
	serverURL  string
	serverErr  error
	cleanups   []func()

	templateOnce sync.Once
	templateName string
	templateErr  error
)

// Main runs the tests of a package and then stops any server it started.
// Use it from TestMain: func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	return code
}

// ServerURL returns the URL of the server's maintenance database, starting
// a server if needed. It fails the test when no server can be had.
func ServerURL(t testing.TB) string {
	t.Helper()
	u, err := server()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// server finds the server once per test binary.
func server() (string, error) {
	serverOnce.Do(func() { serverURL, serverErr = findServer() })
	if serverErr != nil {
		return "", fmt.Errorf("no PostgreSQL for the tests: %w", serverErr)
	}
	return serverURL, nil
}

// New creates a database for this test only, with every migration applied,
// and returns its URL. When the test passes, the database is dropped as the
// test ends, after the test's own cleanups, which must have closed every
// connection to it; a connection still open fails the test. When the test
// has failed, the database is kept and its URL logged.
func New(t testing.TB) string {
	t.Helper()
	ServerURL(t)
	u, drop, err := create()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testdb: kept the failed test's database: psql '%s'", u)
			return
		}
		if err := drop(); err != nil {
			t.Errorf("%v: did the test leave a connection open?", err)
		}
	})
	return u
}

// Shared creates a migrated database that lives until Main returns, for
// what a TestMain sets up before the tests run, such as a server that the
// package's examples talk to.
func Shared() (string, error) {
	if _, err := server(); err != nil {
		return "", err
	}
	u, drop, err := create()
	if err != nil {
		return "", err
	}
	cleanups = append(cleanups, func() { _ = drop() })
	return u, nil
}

// create makes a database from the template and returns its URL and the
// function that drops it. The server must have been found.
func create() (string, func() error, error) {
	admin := serverURL
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(admin) })
	if templateErr != nil {
		return "", nil, fmt.Errorf("test database template: %w", templateErr)
	}
	name := fmt.Sprintf("tokenorchestrator_test_%d_%d", os.Getpid(), time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := execAdmin(ctx, admin, "CREATE DATABASE "+name+" TEMPLATE "+templateName); err != nil {
		return "", nil, fmt.Errorf("create test database: %w", err)
	}
	drop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// Not WITH (FORCE): a session still connected is a leak to report,
		// not one to end. PostgreSQL waits up to 5 s for sessions that are
		// ending.
		if err := execAdmin(ctx, admin, "DROP DATABASE IF EXISTS "+name); err != nil {
			return fmt.Errorf("drop test database %s: %w", name, err)
		}
		return nil
	}
	return withDatabase(admin, name), drop, nil
}

// NewPool is New with a connection pool that is closed when the test ends.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), New(t))
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func findServer() (string, error) {
	var tried []string
	force := os.Getenv("TEST_DATABASE")
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" && force == "" {
		if err := ping(u); err != nil {
			return "", fmt.Errorf("TEST_DATABASE_URL does not answer: %w", err)
		}
		return u, nil
	}
	if force == "" {
		if err := ping(localURL); err == nil {
			return localURL, nil
		} else {
			tried = append(tried, "local server on 127.0.0.1:5432: "+err.Error())
		}
	}
	if force == "" || force == "embedded" {
		u, err := startEmbedded()
		if err == nil {
			return u, nil
		}
		tried = append(tried, "embedded cluster: "+err.Error())
	}
	if force == "" || force == "container" {
		u, err := startContainer()
		if err == nil {
			return u, nil
		}
		tried = append(tried, "container: "+err.Error())
	}
	return "", fmt.Errorf("set TEST_DATABASE_URL, run PostgreSQL on 127.0.0.1:5432, install the PostgreSQL server binaries, or start Docker.\n  tried:\n  - %s",
		strings.Join(tried, "\n  - "))
}

func startEmbedded() (string, error) {
	dir, err := os.MkdirTemp("", "tokenorchestrator-testpg-")
	if err != nil {
		return "", err
	}
	_ = os.Chmod(dir, 0o755) // the server may run as another user than root
	cluster, err := pgembed.Start(context.Background(), pgembed.Config{
		DataDir: filepath.Join(dir, "data"),
		// Durability is not what the tests are about; speed is.
		Settings: map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "300"},
	})
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	cleanups = append(cleanups, func() {
		_ = cluster.Stop()
		os.RemoveAll(dir)
	})
	return cluster.URL(), nil
}

func startContainer() (u string, err error) {
	defer func() {
		// testcontainers panics in some set-ups without Docker.
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return "", fmt.Errorf("docker: %w", err)
	}
	defer provider.Close()
	if err := provider.Health(ctx); err != nil {
		return "", fmt.Errorf("docker is not running: %w", err)
	}
	container, err := tcpostgres.Run(ctx, "postgres:15-alpine",
		tcpostgres.WithDatabase("postgres"), tcpostgres.WithUsername("postgres"), tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies())
	if err != nil {
		return "", err
	}
	cleanups = append(cleanups, func() { _ = testcontainers.TerminateContainer(container) })
	return container.ConnectionString(ctx, "sslmode=disable")
}

// ensureTemplate builds the template database for the current migrations
// unless it exists. Test binaries of several packages run at once, so the
// build is serialised by an advisory lock, and a template becomes visible
// under its final name only once complete.
func ensureTemplate(admin string) (string, error) {
	name := "tokenorchestrator_tmpl_" + migrationsHash()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(727361)"); err != nil {
		return "", err
	}
	defer func() { _, _ = conn.Exec(context.Background(), "SELECT pg_advisory_unlock(727361)") }()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_building"
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+building+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return "", err
	}
	pool, err := pgxpool.New(ctx, withDatabase(admin, building))
	if err != nil {
		return "", err
	}
	err = migrate.Up(ctx, pool)
	pool.Close()
	if err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+building+" RENAME TO "+name); err != nil {
		return "", err
	}
	return name, nil
}

// migrationsHash names the schema version: a change to any migration gives
// a new template.
func migrationsHash() string {
	h := sha256.New()
	_ = fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := fs.ReadFile(migrations.FS, path)
		if err != nil {
			return err
		}
		h.Write([]byte(path))
		h.Write(raw)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func ping(u string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

func execAdmin(ctx context.Context, admin, sql string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func withDatabase(admin, name string) string {
	u, err := url.Parse(admin)
	if err != nil {
		panic(errors.New("testdb: bad server URL"))
	}
	u.Path = "/" + name
	return u.String()
}
