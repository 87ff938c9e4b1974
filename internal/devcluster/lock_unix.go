//go:build unix

package devcluster

import (
	"os"
	"syscall"
)

const canLock = true

// tryLock takes an exclusive lock on f, held until f is closed or the
// process ends, or fails at once if another open file holds it.
func tryLock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
