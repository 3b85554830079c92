// Package proctest runs the server program of a test rig (nginx, HAProxy,
// pebble): started in its own process group, watched for its exit, polled
// until it serves, and stopped with SIGTERM, then SIGKILL to the whole
// group should it linger.
//
//	p, err := proctest.Start(cmd)
//	…
//	if err := p.WaitServing(15*time.Second, func() error { … a handshake … }); err != nil {
//		p.Stop(10 * time.Second)
//		return fmt.Errorf("nginx not serving on %s: %w", addr, err)
//	}
//	t.Cleanup(func() { p.Stop(10 * time.Second) })
package proctest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// ErrExited is what WaitServing returns, wrapped with the exit status,
// when the program ends before it serves.
var ErrExited = errors.New("exited before serving")

// pollInterval is how often WaitServing asks.
const pollInterval = 20 * time.Millisecond

// Process is a started program.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // how it exited, once exited is closed
}

// Start starts cmd in its own process group, so that Stop reaches the
// workers too should a master die first, and watches for its exit.
func Start(cmd *exec.Cmd) (*Process, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %q: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Pid is the program's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the program (an error once it has ended).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Exited is closed when the program has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// WaitServing calls serving until it returns nil, and returns nil then. It
// returns ErrExited, with the exit status, when the program ends first, and
// serving's last error when timeout passes; the caller stops the program.
func (p *Process) WaitServing(timeout time.Duration, serving func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("%w: %v", ErrExited, p.err)
		default:
		}
		err := serving()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving after %v: %w", timeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// Stop sends SIGTERM to the program and waits for it to end; after timeout
// it kills the program's process group and waits. Stopping an ended
// program does nothing.
func (p *Process) Stop(timeout time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.exited
	}
}
