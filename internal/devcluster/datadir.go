package devcluster

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// dataDirPrefix names the embedded etcd's data directories, in os.TempDir().
const dataDirPrefix = "routeguide-dev-etcd-"

// dataDir is the embedded etcd's data directory, DIR, and DIR.lock beside
// it, locked (flock) for as long as the cluster runs. A process that dies
// without cleaning up (SIGKILL, a crash) leaves both, unlocked: the next
// cluster to start removes them.
type dataDir struct {
	path string
	lock *os.File
}

// newDataDir removes the data directories that no running cluster holds,
// then makes one and locks it. The lock file comes first, locked, so that
// no other cluster ever finds the directory unclaimed.
func newDataDir() (*dataDir, error) {
	removeStaleDataDirs(os.TempDir())
	lock, err := newLockFile()
	if err != nil {
		return nil, fmt.Errorf("etcd data directory: %w", err)
	}
	d := &dataDir{path: strings.TrimSuffix(lock.Name(), ".lock"), lock: lock}
	if err := os.Mkdir(d.path, 0o700); err != nil {
		d.remove()
		return nil, fmt.Errorf("etcd data directory: %w", err)
	}
	return d, nil
}

// newLockFile creates a lock file and locks it. Another cluster's cleanup
// may take and remove a lock file in the instant before it is locked; then
// it tries again with another.
func newLockFile() (*os.File, error) {
	for attempt := 1; ; attempt++ {
		lock, err := os.CreateTemp("", dataDirPrefix+"*.lock")
		if err != nil {
			return nil, err
		}
		err = tryLock(lock)
		if err == nil && stillAt(lock) {
			return lock, nil
		}
		lock.Close()
		os.Remove(lock.Name())
		if attempt == 3 {
			return nil, fmt.Errorf("lock %s: %v", lock.Name(), cmp.Or(err, errors.New("removed as it was locked")))
		}
	}
}

// stillAt reports whether f's name still names f.
func stillAt(f *os.File) bool {
	open, err := f.Stat()
	if err != nil {
		return false
	}
	named, err := os.Stat(f.Name())
	return err == nil && os.SameFile(open, named)
}

// remove deletes the directory, then its lock file, and releases the lock.
func (d *dataDir) remove() error {
	err := os.RemoveAll(d.path)
	err = errors.Join(err, os.Remove(d.lock.Name()))
	return errors.Join(err, d.lock.Close())
}

// removeStaleDataDirs removes, from dir, the data directories (and lock
// files) whose lock nobody holds, and the directories without a lock file,
// left by versions before the lock. Errors are ignored: what cannot be removed now is tried again
// at the next start.
func removeStaleDataDirs(dir string) {
	if !canLock {
		return // no way to tell a stale directory from another cluster's
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".lock")
		if !strings.HasPrefix(name, dataDirPrefix) || seen[name] {
			continue
		}
		seen[name] = true
		path := filepath.Join(dir, name)
		lock, err := os.OpenFile(path+".lock", os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			os.RemoveAll(path)
			continue
		}
		if err != nil {
			continue
		}
		if tryLock(lock) == nil {
			os.RemoveAll(path)
			os.Remove(lock.Name())
		}
		lock.Close()
	}
}
