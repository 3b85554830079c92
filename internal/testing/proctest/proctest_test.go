package proctest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestWaitServingAndStop(t *testing.T) {
	t.Parallel()
	p, err := Start(exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	err = p.WaitServing(10*time.Second, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("WaitServing = %v after %d calls, want nil after 3", err, calls)
	}
	p.Stop(10 * time.Second)
	select {
	case <-p.Exited():
	default:
		t.Fatal("Stop returned before the program ended")
	}
	p.Stop(10 * time.Second) // an ended program: nothing to do
}

func TestWaitServingExited(t *testing.T) {
	t.Parallel()
	p, err := Start(exec.Command("false"))
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitServing(10*time.Second, func() error { return errors.New("not yet") })
	if !errors.Is(err, ErrExited) {
		t.Fatalf("WaitServing = %v, want ErrExited", err)
	}
}

func TestWaitServingTimeout(t *testing.T) {
	t.Parallel()
	p, err := Start(exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	want := errors.New("refused")
	err = p.WaitServing(50*time.Millisecond, func() error { return want })
	if !errors.Is(err, want) || errors.Is(err, ErrExited) {
		t.Fatalf("WaitServing = %v, want the last error of serving", err)
	}
}

// TestStopKillsGroup: a program that ignores SIGTERM is killed, with its
// process group, once the timeout passes.
func TestStopKillsGroup(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "trapped")
	p, err := Start(exec.Command("sh", "-c", `trap "" TERM; touch "$0"; sleep 60 & wait`, marker))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitServing(10*time.Second, func() error { _, err := os.Stat(marker); return err }); err != nil {
		t.Fatal(err)
	}
	p.Stop(200 * time.Millisecond)
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		t.Fatalf("exit %v, want killed", p.err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("exit %v, want killed by SIGKILL", p.err)
	}
}
