// Package monitoring_test checks the Prometheus alert rules Sigil ships
// (monitoring/) with promtool: they load, and their unit tests pass.
package monitoring_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The alert rules pass `promtool check rules` and their unit tests
// (a key missing in its backend, a backend down, the audit log failing,
// approvals waiting) pass `promtool test rules`.
func TestAlertRules(t *testing.T) {
	promtool, err := filepath.Abs(filepath.Join("..", "..", "bin", "promtool"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(promtool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool is required under CI=true (make promtool): %v", err)
		}
		t.Skipf("promtool missing (make promtool): %v", err)
	}
	dir := filepath.Join("..", "..", "monitoring")
	for _, args := range [][]string{{"check", "rules", "sigil-alerts.yaml"}, {"test", "rules", "sigil-alerts.test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
