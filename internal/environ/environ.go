// Package environ removes secrets from the process environment (issue 12 item 10: the PIN
// of the signing token).
//
// os.Unsetenv removes a variable from what the process and its children see, but not from
// the kernel's copy of the initial environment, the block of memory /proc/PID/environ and
// `ps e` read (readable by the same user and root). Forget also overwrites the variable's
// value there, on Linux, through /proc/self/mem. Nothing reads that block after start-up: Go
// copied it into its own environment, and libc's environ no longer points to an entry once
// it is unset.
package environ

import "os"

// Forget unsets each variable and blanks its value in the initial environment block. The
// error says the block could not be changed; the variables are unset anyway.
func Forget(names ...string) error {
	for _, n := range names {
		os.Unsetenv(n)
	}
	return scrub(names)
}
