// Package faults holds the tests that run the service as real processes —
// the built binary, several replicas on loopback ports, one PostgreSQL — and
// make things go wrong: load from many clients, a replica killed while it
// holds leases, the database stopped and started again under load.
package faults
