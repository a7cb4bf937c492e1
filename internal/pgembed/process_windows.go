package pgembed

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// credential is unused on Windows: the server runs as this program's user,
// which must not be an administrator (PostgreSQL refuses to run as one).
type credential struct{ Uid, Gid uint32 }

// exeSuffix ends the names of executables.
const exeSuffix = ".exe"

// binDirPatterns are where the EDB installer puts PostgreSQL's binaries.
var binDirPatterns = []string{
	`C:\Program Files\PostgreSQL\*\bin`,
}

func serverCredential() (*credential, error) { return nil, nil }

func serverProcAttr(*credential) *syscall.SysProcAttr { return nil }

func initdbProcAttr(*credential) *syscall.SysProcAttr { return nil }

func reachable(string, *credential) error { return nil }

// processExists reports whether a process with this id runs: on Windows,
// finding a process opens it, which fails for one that does not exist.
func processExists(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	_ = p.Release()
	return true
}

// shutDown asks the server started here to shut down in the given mode.
// Windows has no signals to send a process; pg_ctl reaches the server
// through the event PostgreSQL listens on for that.
func (c *Cluster) shutDown(mode shutdownMode) error {
	m := "fast"
	if mode == immediateShutdown {
		m = "immediate"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, filepath.Join(c.binDir, "pg_ctl"+exeSuffix),
		"stop", "-D", c.cfg.DataDir, "-m", m, "--no-wait").Run()
}
