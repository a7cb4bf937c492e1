//go:build unix && !linux

package pgembed

import "syscall"

// stopWithParent does nothing: only Linux can signal a child when its
// parent dies (Pdeathsig). A server orphaned by a crash of this program
// keeps running; the next Start finds it through postmaster.pid and uses
// it.
func stopWithParent(*syscall.SysProcAttr) {}
