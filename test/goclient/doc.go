// Package goclient holds the tests of the Go client, the module
// github.com/tokenorchestrator/tokenorchestrator/client in client/, that need
// the server. The client is a module of its own so that the programs that
// import it get the standard library only; its tests that run replicas and
// databases (servertest, testdb, pgx) therefore live here, in the server's
// module, and so does the test that runs the client module's own tests and
// builds a program that imports it as users do.
package goclient
