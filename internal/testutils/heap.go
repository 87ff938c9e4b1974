package testutils

import "runtime"

// HeapAfterGC returns the memory statistics after two collections: what the
// process holds, less what sync.Pools keep (the first collection moves it
// aside, the second frees it).
func HeapAfterGC() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}
