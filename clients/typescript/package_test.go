package typescript_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/servertest"
)

// The package as users get it: packed with npm pack (whose prepack script
// builds it from a clean copy of the sources), installed from the tarball
// into a project of its own, type-checked there against the declarations
// it ships, and run against a real server: a key created, claimed and
// released.
func TestTypeScriptPackage(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	var npm string
	if err == nil {
		npm, err = exec.LookPath("npm")
	}
	if err == nil {
		// The build's compiler, installed by npm ci (make typescript).
		_, err = os.Stat(filepath.Join("node_modules", "typescript", "bin", "tsc"))
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the TypeScript package cannot be built (%v): make test installs its dependencies with npm ci", err)
		}
		t.Skipf("the TypeScript package cannot be built (%v): run make typescript", err)
	}
	here, err := filepath.Abs(".")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	run := func(dir string, name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "npm_config_update_notifier=false", "npm_config_fund=false", "npm_config_audit=false")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "%s %s in %s:\n%s%s", name, strings.Join(args, " "), dir, out, stderr.String())
		return string(out)
	}

	// The license the package declares is the repository's.
	license, err := os.ReadFile(filepath.Join("..", "..", "LICENSE"))
	require.NoError(t, err)
	own, err := os.ReadFile("LICENSE")
	require.NoError(t, err)
	require.Equal(t, string(license), string(own), "clients/typescript/LICENSE differs from the repository's LICENSE")

	// A copy of the sources without dist/, so that what is packed is what
	// prepack built, not an earlier build; and so that this test does not
	// rebuild dist/ under TestTypeScriptClient, which runs from it.
	work := t.TempDir()
	pkg := filepath.Join(work, "package")
	require.NoError(t, copySources(here, pkg))
	require.NoError(t, os.Symlink(filepath.Join(here, "node_modules"), filepath.Join(pkg, "node_modules")))
	var packed []struct {
		Filename string
		Files    []struct{ Path string }
	}
	require.NoError(t, json.Unmarshal([]byte(run(pkg, npm, "pack", "--json", "--pack-destination", work)), &packed))
	require.Len(t, packed, 1)
	var files []string
	for _, f := range packed[0].Files {
		files = append(files, f.Path)
	}
	for _, want := range []string{
		"package.json", "LICENSE", "README.md",
		"dist/src/index.js", "dist/src/index.d.ts", "dist/src/schema.d.ts", "dist/src/client.d.ts", "dist/src/lease.d.ts",
	} {
		require.Contains(t, files, want, "the tarball lacks %s", want)
	}
	for _, f := range files {
		require.False(t, strings.HasPrefix(f, "dist/test/") || strings.HasPrefix(f, "test/") || strings.HasPrefix(f, "node_modules/"),
			"the tarball holds %s", f)
	}

	var manifest struct {
		License      string
		Private      bool
		Dependencies map[string]string
	}
	raw, err := os.ReadFile("package.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &manifest))
	require.Equal(t, "Apache-2.0", manifest.License)
	require.False(t, manifest.Private, "a private package cannot be published")
	// No runtime dependency: the tarball installs with no registry.
	require.Empty(t, manifest.Dependencies)

	// A project of a user's, with no @types/node: the package's
	// declarations must stand on their own (skipLibCheck off checks them).
	app := filepath.Join(work, "app")
	require.NoError(t, os.MkdirAll(app, 0o755))
	for name, content := range map[string]string{
		"package.json":  `{"name": "app", "private": true, "type": "module"}` + "\n",
		"tsconfig.json": scratchTSConfig,
		"main.ts":       scratchTS,
	} {
		require.NoError(t, os.WriteFile(filepath.Join(app, name), []byte(content), 0o644))
	}
	run(app, npm, "install", "--offline", filepath.Join(work, packed[0].Filename))
	run(app, node, filepath.Join(here, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json")

	url := servertest.Start(t, servertest.Options{}).URL
	out := run(app, node, filepath.Join("out", "main.js"), url)
	require.Equal(t, "claimed the key created\nreleased: 1 of 1 free\n", out)
}

// copySources copies the package's directory from src to dst, without what
// npm ci and the build put there.
func copySources(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == "node_modules" || rel == "dist" {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

const scratchTSConfig = `{
  "compilerOptions": {
    "target": "ES2022",
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "lib": ["ES2022", "DOM"],
    "types": [],
    "strict": true,
    "skipLibCheck": false,
    "outDir": "out"
  },
  "files": ["main.ts"]
}
`

// scratchTS creates a key, claims it with the lease helper, releases it
// and shows the pool's counts.
const scratchTS = `import { Client, type Key, type PoolStatus } from "@tokenorchestrator/client";

// No @types/node in this project.
declare const process: { argv: string[] };

const client = new Client(process.argv[2]!);
const created: Key = await client.createKey("scratch");
const lease = await client.claim({ pool: "scratch", timeoutMs: 10_000 });
console.log(lease.id === created.keyId ? "claimed the key created" : "claimed another key");
await lease.release();
const status: PoolStatus = await client.poolStatus("scratch");
console.log("released: " + status.free + " of " + status.keys + " free");
`
