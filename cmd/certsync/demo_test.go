package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `make demo`'s script, deploy/demo/demo.sh, with the test's
// certsync binary, as the README tells a newcomer to: it must end with both
// nodes installed and "The demo worked".
func TestDemo(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../deploy/demo/demo.sh", certsyncBin(t))
	cmd.Env = procEnv(nil)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "The demo worked.") {
		t.Fatalf("make demo: %v\n%s", err, out)
	}
	for _, node := range []string{"web1", "web2"} {
		if !strings.Contains(string(out), node+": staged and installed files are byte-identical to certbot's current ones") {
			t.Errorf("the demo does not show %s's files identical to certbot's:\n%s", node, out)
		}
	}
}
