// Package failover holds the test that runs the service on a highly
// available PostgreSQL and fails its primary over under load: a
// pg_auto_failover formation (a monitor and two nodes) on loopback, two
// replicas of the built binary on a multi-host DATABASE_URL with
// target_session_attrs=read-write, clients that claim with idempotency
// keys, keep alive and release, and faults: the primary's postmaster killed
// with SIGKILL, and a switchover. A checker then holds the clients' log and
// the history to the guarantees of docs/guarantees.md.
//
// The formation needs pg_auto_failover (apt-get install
// postgresql-15-auto-failover pg-auto-failover-cli) and runs as the postgres
// user, so the test runs as root (or as postgres). It takes a few minutes
// and runs only when asked: FAILOVER_TESTS=on, as `make test-failover` sets
// it. The checker's own tests run with every go test.
package failover
