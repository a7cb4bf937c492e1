//go:build unix

package keyexec

import (
	"os"
	"syscall"
)

// signalOf is the number of the signal that ended the process, if one did.
func signalOf(ps *os.ProcessState) (int, bool) {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return int(ws.Signal()), true
	}
	return 0, false
}
