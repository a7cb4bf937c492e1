package main

import (
	"os"
	"syscall"
	"unsafe"
)

// inTerminalForeground reports whether this process runs in the foreground
// process group of the terminal on its standard input: the terminal then
// sends its Ctrl-C and hang-up to the command exec runs as well.
func inTerminalForeground() bool {
	var group int32
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, os.Stdin.Fd(), syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&group)))
	return errno == 0 && int(group) == syscall.Getpgrp()
}
