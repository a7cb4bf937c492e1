//go:build unix

package pgembed

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// credential is the system user the server runs as when it is not this
// process's user.
type credential = syscall.Credential

// exeSuffix ends the names of executables.
const exeSuffix = ""

// binDirPatterns are where PostgreSQL's server binaries are usually
// installed, newest version first within each pattern.
var binDirPatterns = []string{
	"/usr/lib/postgresql/*/bin",          // Debian, Ubuntu
	"/usr/pgsql-*/bin",                   // RHEL, Fedora
	"/opt/homebrew/opt/postgresql@*/bin", // Homebrew on Apple silicon
	"/usr/local/opt/postgresql@*/bin",    // Homebrew on Intel
	"/Applications/Postgres.app/Contents/Versions/*/bin",
}

// serverCredential says whom the server runs as: this process's user, or
// the postgres system user when this process is root.
func serverCredential() (*credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errors.New("PostgreSQL cannot run as root and there is no 'postgres' user to run it as: create one, run as another user, or set DATABASE_URL")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// serverProcAttr runs the server as cred in a process group of its own, so
// that a Ctrl-C meant for this program reaches the server only through
// Stop, which shuts it down in order.
func serverProcAttr(cred *credential) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	stopWithParent(attr)
	return attr
}

// initdbProcAttr runs initdb as cred.
func initdbProcAttr(cred *credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}

// reachable checks that the server's user can reach dir: every directory
// above it must be searchable by that user.
func reachable(dir string, cred *credential) error {
	for d := dir; ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		searchable := info.Mode().Perm()&0o001 != 0 ||
			(ok && st.Uid == cred.Uid && info.Mode().Perm()&0o100 != 0) ||
			(ok && st.Gid == cred.Gid && info.Mode().Perm()&0o010 != 0)
		if !searchable {
			return fmt.Errorf("the postgres user cannot reach %s: %s is not searchable by it (chmod o+x %s, or choose another data directory)", dir, d, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// processExists reports whether a process with this id runs, whoever owns
// it (EPERM: it runs as another user).
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// shutDown asks the server started here to shut down in the given mode:
// SIGINT is PostgreSQL's fast shutdown, SIGQUIT its immediate one.
func (c *Cluster) shutDown(mode shutdownMode) error {
	if mode == immediateShutdown {
		return c.cmd.Process.Signal(syscall.SIGQUIT)
	}
	return c.cmd.Process.Signal(syscall.SIGINT)
}
