package server

import (
	"testing"
	"time"
)

// SetHTTPIdleTimeout shortens the HTTP idle timeout for one test.
func SetHTTPIdleTimeout(t *testing.T, d time.Duration) {
	old := httpIdleTimeout
	httpIdleTimeout = d
	t.Cleanup(func() { httpIdleTimeout = old })
}
