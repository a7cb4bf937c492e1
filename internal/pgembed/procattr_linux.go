package pgembed

import "syscall"

// stopWithParent asks the kernel for a fast shutdown of the server (SIGINT)
// if this program dies without stopping it, so that no orphaned server
// holds the data directory and the port.
func stopWithParent(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGINT
}
