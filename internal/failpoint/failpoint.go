// Package failpoint kills the process at a named step of a multi-step
// change when the environment names that step, so that crash tests can
// play a kill -9 at every step and check what a restart makes of it.
//
// SIGIL_FAILPOINT=NAME arms one step. Unset (always, in production) Hit
// costs a comparison of an empty string. It lives in internal/ because it
// is a test instrument, not part of any interface.
package failpoint

import (
	"os"
	"syscall"
)

// Env is the variable that arms a step.
const Env = "SIGIL_FAILPOINT"

var armed = os.Getenv(Env)

// Hit kills the process with SIGKILL, as an operator's kill -9 or a
// power cut would, when name is the armed step.
func Hit(name string) {
	if armed != "" && armed == name {
		os.Stderr.WriteString("failpoint " + name + ": killing the process\n")
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught; never return into the step
	}
}
