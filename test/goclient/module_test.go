package goclient_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// clientModule is the module path of the Go client.
const clientModule = "github.com/tokenorchestrator/tokenorchestrator/client"

// clientDir is the client module's directory.
func clientDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "client"))
	require.NoError(t, err)
	return dir
}

// goCommand runs the go command in dir with the environment of the test
// plus env, and returns its output; it fails the test if the command fails.
func goCommand(t *testing.T, ctx context.Context, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	// GOWORK=off: a go.work above the checkout must not decide which copy
	// of the client is built.
	cmd.Env = append(append(os.Environ(), "GOWORK=off"), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go %s in %s:\n%s", strings.Join(args, " "), dir, out)
	return string(out)
}

// The client's own module is vetted and tested as a module apart (go test
// ./... in the repository's root does not enter it), with its examples run
// against a real replica: they check their output.
func TestClientModuleOwnTests(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := clientDir(t)

	// Standard library only: the module requires nothing, so it has no
	// go.sum to speak of.
	var mod struct{ Require []struct{ Path string } }
	require.NoError(t, json.Unmarshal([]byte(goCommand(t, ctx, dir, nil, "mod", "edit", "-json")), &mod))
	require.Empty(t, mod.Require, "client/go.mod requires modules: programs that import the client would get them")
	if sum, err := os.ReadFile(filepath.Join(dir, "go.sum")); err == nil {
		require.Empty(t, strings.TrimSpace(string(sum)), "client/go.sum lists modules")
	}

	goCommand(t, ctx, dir, nil, "vet", "./...")
	replica := servertest.Start(t, servertest.Options{})
	out := goCommand(t, ctx, dir, []string{"TO_URL=" + replica.URL}, "test", "-count=1", "-v", "./...")
	t.Logf("go test in client/:\n%s", out)

	source, err := os.ReadFile(filepath.Join(dir, "example_test.go"))
	require.NoError(t, err)
	examples := regexp.MustCompile(`(?m)^func (Example\w*)\(\)`).FindAllStringSubmatch(string(source), -1)
	require.NotEmpty(t, examples)
	for _, example := range examples {
		require.Regexp(t, `(?m)^--- PASS: `+example[1]+` `, out, "the example did not run")
	}
	require.Contains(t, out, "--- PASS: TestLeaseDurationComesFromTheServersTimes")
	require.NotContains(t, out, "--- SKIP")
}

// A program of another module imports the client as users do (go get, or
// here a replace to this checkout): it builds with nothing but the client
// and the standard library, its go.sum stays empty, and it claims and
// releases a key of a real replica.
func TestClientModuleImportedByAProgram(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(
		"module example.com/scratch\n\ngo 1.26.0\n\nreplace "+clientModule+" => "+clientDir(t)+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(scratchProgram), 0o644))

	// -mod=mod lets the build add the client to go.mod (at the zero
	// version that a replace at every version stands for), as go get
	// would; the module proxy is the environment's, and is not needed
	// while the client has no dependencies.
	env := []string{"GOFLAGS=" + strings.TrimSpace(os.Getenv("GOFLAGS")+" -mod=mod")}
	goCommand(t, ctx, dir, env, "build", "-o", "scratch", ".")
	goCommand(t, ctx, dir, env, "mod", "tidy")

	sum, err := os.ReadFile(filepath.Join(dir, "go.sum"))
	if err == nil {
		require.Empty(t, strings.TrimSpace(string(sum)), "the program's go.sum lists the client's dependencies")
	} else {
		require.ErrorIs(t, err, os.ErrNotExist)
	}
	modules := strings.Fields(goCommand(t, ctx, dir, env, "list", "-m", "-f", "{{.Path}}", "all"))
	require.Equal(t, []string{"example.com/scratch", clientModule}, modules, "the program's module graph")

	run := exec.CommandContext(ctx, filepath.Join(dir, "scratch"), servertest.Start(t, servertest.Options{}).URL)
	out, err := run.CombinedOutput()
	require.NoError(t, err, "the program:\n%s", out)
	require.Regexp(t, `^claimed \S+\nreleased: 1 of 1 free\n$`, string(out))
}

// scratchProgram creates a key, claims it, releases it and shows the pool's
// counts.
const scratchProgram = `package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/client"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.CreateKey(ctx, "scratch"); err != nil {
		log.Fatal(err)
	}
	lease, err := c.Claim(ctx, "scratch")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("claimed", lease.ID())
	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}
	status, err := c.PoolStatus(ctx, "scratch")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("released: %d of %d free\n", status.Free, status.Keys)
}
`
