//go:build !unix

package keyexec

import "os"

// signalOf: no process is ended by a numbered signal here.
func signalOf(*os.ProcessState) (int, bool) { return 0, false }
