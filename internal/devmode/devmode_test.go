package devmode

import (
	"strings"
	"testing"
)

func TestPrepareRefusesNonLoopbackAddresses(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:7443", "10.1.2.3:7443", "example.org:7443", "7443"} {
		for _, a := range []Addrs{{addr, "127.0.0.1:7080", "127.0.0.1:7081"}, {"127.0.0.1:7443", addr, "127.0.0.1:7081"}, {"127.0.0.1:7443", "127.0.0.1:7080", addr}} {
			_, err := Prepare(t.TempDir(), a)
			if err == nil || !strings.Contains(err.Error(), addr) {
				t.Errorf("Prepare(%+v): %v", a, err)
			}
		}
	}
}
