package namespace

import "time"

// AgeReadForTest makes r's copy of the namespaces look read d ago.
func AgeReadForTest(r *Registry, d time.Duration) {
	r.read.Store(time.Now().Add(-d).UnixNano())
}
