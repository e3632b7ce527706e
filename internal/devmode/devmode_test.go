package devmode

import (
	"strings"
	"testing"
)

func TestPrepareRefusesNonLoopbackAddresses(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:7443", "10.1.2.3:7443", "example.org:7443", "7443"} {
		ok := Addrs{GRPC: "127.0.0.1:7443", HTTP: "127.0.0.1:7080", Admin: "127.0.0.1:7081", EthRPC: "127.0.0.1:7545"}
		grpcBad, httpBad, adminBad, ethBad := ok, ok, ok, ok
		grpcBad.GRPC, httpBad.HTTP, adminBad.Admin, ethBad.EthRPC = addr, addr, addr, addr
		for _, a := range []Addrs{grpcBad, httpBad, adminBad, ethBad} {
			_, err := Prepare(t.TempDir(), a)
			if err == nil || !strings.Contains(err.Error(), addr) {
				t.Errorf("Prepare(%+v): %v", a, err)
			}
		}
	}
}
