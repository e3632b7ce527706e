package devmode

import (
	"strings"
	"testing"
)

func TestPrepareRefusesNonLoopbackAddresses(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:7443", "10.1.2.3:7443", "example.org:7443", "7443"} {
		_, err := Prepare(t.TempDir(), addr, "127.0.0.1:7080")
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("Prepare(%q): %v", addr, err)
		}
	}
}
