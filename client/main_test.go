package client_test

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// serverURL is the server that the examples talk to: TO_URL. The client
// module cannot start one (the server is another module, and would become a
// dependency of every program that imports the client), so the server
// module's test/goclient starts one and runs these tests against it.
var serverURL string

func TestMain(m *testing.M) {
	if serverURL = os.Getenv("TO_URL"); serverURL == "" {
		// The examples check their output against a real server: without
		// one they are left out, and the tests that need none still run.
		flag.Parse()
		if err := flag.Set("test.skip", "^Example"); err != nil {
			fmt.Fprintln(os.Stderr, "leave the examples out:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "TO_URL is not set: the examples are left out (go test ./test/goclient in the repository's root runs them against a server)")
	}
	os.Exit(m.Run())
}
