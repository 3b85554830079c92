// The installer: the install of one certificate, step by step (build a
// version folder, point install_dir at it, check, reload, the
// served-certificate check, rollback on any failure, the failure recorded),
// and the InstallOutcome and InstallResult it reports. Node.Install
// (node.go) and the scheduler (scheduler.go) call it.

package subscriber

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/certsync/certsync/crypto"
)

// InstallOutcome is what became of one certificate's install.
type InstallOutcome string

// Outcomes of an install.
const (
	// InstallInstalled: the staged bundle is in service; check, reload and
	// verify passed.
	InstallInstalled InstallOutcome = "installed"
	// InstallUnchanged: the staged bundle was already in service; nothing
	// was done, nothing reloaded.
	InstallUnchanged InstallOutcome = "unchanged"
	// InstallSkipped: the staged version failed to install before; it is
	// not tried again until its retry is due (under the expiry deadline),
	// a newer bundle arrives or `certsync node install` runs.
	InstallSkipped InstallOutcome = "skipped"
	// InstallFailed: the install failed; install_dir was rolled back to
	// the previous version when there was one (RolledBack).
	InstallFailed InstallOutcome = "failed"
)

// InstallResult is what happened to one certificate's install.
type InstallResult struct {
	// Name is the certificate's name.
	Name string
	// Release is the staged bundle's version, serial, fingerprint and
	// validity (zero when the staged record could not be read).
	crypto.Release
	// Outcome says what became of it.
	Outcome InstallOutcome
	// RolledBack is true when a failed install pointed install_dir at the
	// previous version again (its reload, if that then failed, is in Err);
	// false when there was none or pointing back failed.
	RolledBack bool
	// Err says why, for InstallFailed and InstallSkipped. It holds the tail
	// of a failed command's output, never the content of a file certsync
	// wrote.
	Err error
}

// installer puts the bundles of one certificate into its install_dir:
//
//	<parent>/<base>                -> .certsync/<name>/<version>-<fp12>   (install_dir, a symbolic link)
//	<parent>/.certsync/<name>/<version>-<fp12>/  cert.pem chain.pem fullchain.pem privkey.pem [combined.pem] certsync.json
//	<parent>/.certsync/<name>/state.json          (0600) an install under way, the last failed version
//	<parent>/.certsync/<name>/.lock               serialises installers of this certificate
//
// .certsync and .certsync/<name> are storeMode; the version folders and
// their certsync.json are root's (certsync's user's) alone, and only the
// certificate and key files in them are the configured owner's (see build
// and record).
//
// A version folder is built under a temporary name, every file synced, and
// renamed into place once complete; install_dir only ever points at a
// complete one, and changes with one rename of a new link over it. So a
// reader sees all of one version, and a crash at any instant leaves
// install_dir at one complete version. What a crash leaves behind (a
// temporary folder or link) is removed by the next install.
//
// Before each install, and before reading what is installed, the path to
// install_dir's parent, .certsync and .certsync/<name> is checked as
// paths.go says. install_dir must be missing, a real folder (moved aside),
// or a link certsync made: to one of this certificate's version folders,
// or to the folder it moved aside. state.json, .lock, certsync.json and
// the version folders are never followed through a link.
type installer struct {
	c    Certificate
	log  *slog.Logger
	now  func() time.Time
	node string // for the splay offset and logs

	// step, when set (tests), is called after each durable step of an
	// install, with its name.
	step func(string)
}

func (in *installer) did(step string) {
	if in.step != nil {
		in.step(step)
	}
}

// installOpts say how an install was decided.
type installOpts struct {
	// force tries even a version that failed before (skipped otherwise).
	force bool
	// generation is the rollout record's under which a held bundle is
	// installed (0 for none): a failure is recorded with it, and only a
	// later generation tries that version again (holdDue).
	generation uint64
	// rollout is how a held bundle went into service, wire.RolloutReleased
	// or wire.RolloutExpiry, kept in the version's certsync.json ("" when
	// not held, or installed by hand while not released).
	rollout string
}

// install puts the bundle b, staged as meta, in service. Unless o.force, a
// version that failed before is skipped. See Node.Install for the steps.
func (in *installer) install(ctx context.Context, b *crypto.Bundle, meta *Staged, o installOpts) InstallResult {
	res := InstallResult{Name: in.c.Name, Release: meta.Release}
	fail := func(err error) InstallResult {
		res.Outcome, res.Err = InstallFailed, err
		return res
	}
	unlock, err := in.lock() // checks the name and the paths
	if err != nil {
		return fail(err)
	}
	defer unlock()
	if err := in.cleanup(); err != nil {
		return fail(err)
	}
	st, err := in.readState()
	if err != nil {
		return fail(err)
	}
	cur, real, err := in.target()
	if err != nil {
		return fail(err)
	}
	curRec, err := in.record(cur)
	untrusted := errors.Is(err, errUntrusted)
	if untrusted {
		// Its record cannot be believed: no downgrade check against it
		// (the stage's still holds), and this version's folder, if it is
		// that one, is built again, root's.
		in.log.Warn("install_record_untrusted", "name", in.c.Name, "error", err,
			"hint", "the version folder is rebuilt, root's, with the staged bundle")
		curRec, err = nil, nil
	}
	if err != nil {
		return fail(err)
	}
	folder := folderName(meta)
	inService := cur == in.linkPrefix()+folder
	failedBefore := st.Failed.is(meta)

	// Settled: what is in service is this bundle, and it went well.
	if st.Pending == nil && inService && !untrusted && !failedBefore {
		res.Outcome = InstallUnchanged
		return res
	}
	if st.Pending == nil && curRec != nil && !inService {
		if err := crypto.CheckOrder(curRec.Release, meta.Release); err != nil {
			return in.failed(st, meta, o, res, permanent(fmt.Errorf("installing %q version %d: %s: %w",
				in.c.Name, meta.Version, heldAs("installed", curRec.Release, meta.Release), err)))
		}
	}
	if failedBefore && !o.force {
		res.Outcome = InstallSkipped
		res.Err = fmt.Errorf("installing %q version %d: failed before (%s); a newer bundle, certsync node install, or a retry under expiry_deadline tries again", in.c.Name, meta.Version, st.Failed.Error)
		return res
	}

	// The version to roll back to: what was in service before the
	// install under way, if one was cut short.
	previous := cur
	switch {
	case st.Pending != nil:
		previous = st.Pending.Previous
	case inService:
		// A first install that failed, its files left in place, or this
		// version's folder about to be rebuilt: nothing else to go back to.
		previous = ""
	case real:
		if previous, err = in.moveAside(); err != nil {
			return fail(err)
		}
	}
	if !inService || untrusted {
		if _, err := in.build(b, meta, o.rollout); err != nil {
			return fail(err)
		}
	}
	st.Pending = &pendingInstall{Release: meta.Release, Previous: previous}
	if err := in.writeState(st); err != nil {
		return fail(err)
	}
	in.did("pending_written")
	if err := in.point(in.linkPrefix() + folder); err != nil {
		res.RolledBack, err = in.rollback(ctx, previous, err)
		return fail(err)
	}
	in.log.Info("install_linked", "name", in.c.Name, "version", meta.Version, "fingerprint", meta.Fingerprint,
		"install_dir", in.c.InstallDir, "previous", previous)

	if err := in.activate(ctx, b, meta); err != nil {
		err = fmt.Errorf("installing %q version %d: %w", in.c.Name, meta.Version, err)
		res.RolledBack, err = in.rollback(ctx, previous, err)
		return in.failed(st, meta, o, res, err)
	}
	st.Pending, st.Failed, st.Verified = nil, nil, nil
	if in.c.Verify != "" {
		st.Verified = &verifiedInstall{Release: meta.Release, Address: in.c.Verify, At: in.now().UTC()}
	}
	if err := in.writeState(st); err != nil {
		return fail(err)
	}
	in.did("done")
	in.prune(folder)
	in.log.Info("install_done", "name", in.c.Name, "version", meta.Version, "serial", meta.Serial,
		"fingerprint", meta.Fingerprint, "not_after", meta.NotAfter)
	res.Outcome = InstallInstalled
	return res
}

// failed records err as the failure of meta's install (one more in a row
// when the same version failed before; permanent when err is), clears any
// pending install, and returns res failed with err.
func (in *installer) failed(st *installState, meta *Staged, o installOpts, res InstallResult, err error) InstallResult {
	attempts := 1
	if st.Failed.is(meta) {
		attempts = max(st.Failed.Attempts, 1) + 1
	}
	st.Pending = nil
	st.Failed = &failedInstall{Release: meta.Release, Error: err.Error(), At: in.now().UTC(),
		Attempts: attempts, Permanent: IsPermanent(err), Generation: o.generation}
	if werr := in.writeState(st); werr != nil {
		err = fmt.Errorf("%w (and recording the failure: %v)", err, werr)
	}
	in.log.Warn("install_failed", "name", in.c.Name, "version", meta.Version, "fingerprint", meta.Fingerprint,
		"rolled_back", res.RolledBack, "attempts", attempts, "rollout_generation", o.generation, "error", err)
	res.Outcome, res.Err = InstallFailed, err
	return res
}

// retryUnrecorded deals with the installs of results that failed before
// the install state could record the failure: the stage or the install
// folder could not be read, or the lock or the store not made (a read-only
// or full file system, a sandbox that does not let the node write there).
// A recorded failure is logged by installer.failed and tried again as
// planFor says; for these nothing would, until the next bundle. Each is
// logged (install_failed), reported in the status record, and tried again
// after a growing delay (retryBase doubling to retryMax), which it adds to
// waiting. An install that then succeeds clears both.
func (n *Node) retryUnrecorded(results []InstallResult, waiting []Scheduled) []Scheduled {
	n.unrecordedMu.Lock()
	defer n.unrecordedMu.Unlock()
	for _, r := range results {
		switch r.Outcome {
		case InstallInstalled, InstallUnchanged:
			delete(n.unrecorded, r.Name)
			n.status.installRecovered(r.Name)
			continue
		case InstallFailed:
		default:
			continue
		}
		if _, st, err := n.installers[r.Name].installed(); err == nil && st.Failed != nil &&
			crypto.Compare(st.Failed.Release, r.Release) == crypto.Same {
			continue // recorded
		}
		if n.unrecorded == nil {
			n.unrecorded = map[string]uint64{}
		}
		n.unrecorded[r.Name]++
		attempts := n.unrecorded[r.Name]
		delay := backoff(attempts, n.retryBase, n.retryMax)
		n.log.Warn("install_failed", "name", r.Name, "version", r.Version, "attempts", attempts, "retry_in", delay, "error", r.Err,
			"hint", "nothing was changed: the install could not start; it is tried again then, and at the next bundle")
		n.status.installFailed(r.Name, r.Err)
		waiting = append(waiting, Scheduled{Name: r.Name, Version: r.Version, At: n.cfg.Now().Add(delay), Why: "retry"})
	}
	return waiting
}

// rollback points install_dir back at previous and reloads again, after
// cause made the install fail. With no previous version the new one stays
// in place: a service without files cannot be rolled back to anything. It
// returns whether install_dir points at previous again (true even when the
// reload after that failed: the files are the previous version's), and
// cause, with what rolling back did or why it failed.
func (in *installer) rollback(ctx context.Context, previous string, cause error) (bool, error) {
	if previous == "" {
		return false, fmt.Errorf("%w; nothing to roll back to, the new files stay in place", cause)
	}
	if err := in.point(previous); err != nil {
		in.log.Error("install_rollback_failed", "name", in.c.Name, "install_dir", in.c.InstallDir, "to", previous,
			"reason", cause, "error", err)
		return false, fmt.Errorf("%w; rolling back failed: %v", cause, err)
	}
	in.did("rolled_back")
	in.log.Warn("install_rolled_back", "name", in.c.Name, "install_dir", in.c.InstallDir, "to", previous, "reason", cause)
	if !in.c.Reload.IsZero() {
		// The environment names the version rolled back to, if certsync's.
		env := []string{EnvName + "=" + in.c.Name, EnvInstallDir + "=" + in.c.InstallDir}
		if rec, _ := in.record(previous); rec != nil {
			env = append(env, EnvSerial+"="+rec.Serial, EnvFingerprint+"="+rec.Fingerprint.String())
		}
		cmd := command{what: "reload", cmd: in.c.Reload, timeout: in.c.CommandTimeout, env: env}
		if err := cmd.run(ctx); err != nil {
			return true, fmt.Errorf("%w; rolled back to %s, but reloading then failed: %v", cause, previous, err)
		}
		in.did("reloaded_previous")
	}
	return true, fmt.Errorf("%w; rolled back to %s", cause, previous)
}

// activate runs check, reload and verify for the version just linked.
func (in *installer) activate(ctx context.Context, b *crypto.Bundle, meta *Staged) error {
	env := []string{
		EnvName + "=" + in.c.Name,
		EnvInstallDir + "=" + in.c.InstallDir,
		EnvSerial + "=" + meta.Serial,
		EnvFingerprint + "=" + meta.Fingerprint.String(),
	}
	for _, c := range []command{
		{what: "check", cmd: in.c.Check},
		{what: "reload", cmd: in.c.Reload},
	} {
		if c.cmd.IsZero() {
			continue
		}
		c.timeout, c.env = in.c.CommandTimeout, env
		if err := c.run(ctx); err != nil {
			return err
		}
		in.did(c.what + "_done")
		in.log.Info("install_"+c.what+"_passed", "name", in.c.Name, "command", c.cmd.String())
	}
	if in.c.Verify == "" {
		return nil
	}
	sni := ""
	if blk, _ := pem.Decode(b.Cert); blk != nil {
		if leaf, err := x509.ParseCertificate(blk.Bytes); err == nil {
			sni = serverName(leaf)
		}
	}
	if err := verifyServed(context.WithoutCancel(ctx), in.c.Verify, sni, meta.Fingerprint, in.c.VerifyTimeout); err != nil {
		return err
	}
	in.did("verify_done")
	in.log.Info("install_verify_passed", "name", in.c.Name, "address", in.c.Verify, "sni", sni)
	return nil
}
