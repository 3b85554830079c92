package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/internal/natsconn"
)

const (
	flagListen = "listen"
	flagStore  = "store"

	defaultListen = "127.0.0.1:4222"
	defaultStore  = "/var/lib/certsync/nats"
)

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run an embedded NATS server with JetStream on file storage",
		Description: `Runs NATS for a single management host. --config takes a full nats-server
configuration (TLS, accounts, cluster, leafnodes); --listen and --store, when
given, override its listen address and JetStream store. JetStream is always on.
SIGHUP reloads the configuration file (after "certsync auth" changed users).
SIGTERM or SIGINT stops the server cleanly; streams and consumers survive.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagListen, Value: defaultListen, Usage: "client listen `HOST:PORT`", EnvVars: []string{"CERTSYNC_LISTEN"}},
			&cli.StringFlag{Name: flagStore, Value: defaultStore, Usage: "JetStream store `DIR`", EnvVars: []string{"CERTSYNC_STORE"}},
			&cli.StringFlag{Name: flagConfig, Usage: "nats-server configuration `FILE`"},
			verboseFlag(),
		},
		Action: runServer,
	}
}

func runServer(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	log := newLogger(c, true)
	opts, err := serverOptions(c)
	if err != nil {
		return err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("starting nats server: %w", natsconn.RedactError(err))
	}
	s.SetLoggerV2(natsLogger{log.With("component", "nats")}, opts.Debug, opts.Trace, false)

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("starting nats server on %s: not ready after 30s", net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)))
	}
	log.Info("server_ready", "url", s.ClientURL(), "store", opts.StoreDir)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	stopped := waitShutdown(s)
wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("server_stopping", "reason", context.Cause(ctx))
			break wait
		case <-stopped:
			break wait
		case <-hup:
			// Re-read --config (e.g. after `certsync auth` wrote new users)
			// with the same flags applied, so only the file's changes differ.
			if err := reloadServer(c, s); err != nil {
				log.Error("server_reload_failed", "error", err)
			} else {
				log.Info("server_reloaded")
			}
		}
	}
	s.Shutdown()
	s.WaitForShutdown()
	log.Info("server_stopped")
	return nil
}

func reloadServer(c *cli.Context, s *server.Server) error {
	if c.String(flagConfig) == "" {
		return errors.New("reloading: no --config file to reload")
	}
	opts, err := serverOptions(c)
	if err != nil {
		return err
	}
	if err := s.ReloadOptions(opts); err != nil {
		return fmt.Errorf("reloading server config %q: %w", c.String(flagConfig), natsconn.RedactError(err))
	}
	return nil
}

func waitShutdown(s *server.Server) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		s.WaitForShutdown()
		close(done)
	}()
	return done
}

// serverOptions builds the server's options from --config, then applies
// --listen and --store when they were given or when no file sets them.
func serverOptions(c *cli.Context) (*server.Options, error) {
	opts := &server.Options{}
	if f := c.String(flagConfig); f != "" {
		var err error
		if opts, err = server.ProcessConfigFile(f); err != nil {
			// nats-server's parser repeats a URL it cannot parse, with
			// its password.
			return nil, fmt.Errorf("reading server config %q: %w", f, natsconn.RedactError(err))
		}
	}
	fromFile := c.String(flagConfig) != ""
	if c.IsSet(flagListen) || !fromFile || opts.Port == 0 {
		host, port, err := splitHostPort(c.String(flagListen))
		if err != nil {
			return nil, err
		}
		opts.Host, opts.Port = host, port
	}
	if c.IsSet(flagStore) || opts.StoreDir == "" {
		opts.StoreDir = c.String(flagStore)
	}
	if opts.ServerName == "" {
		opts.ServerName = "certsync"
	}
	opts.JetStream = true
	opts.NoSigs = true // signals are handled here
	return opts, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("parsing listen address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("parsing listen address %q: port must be a number from 0 to 65535", addr)
	}
	return host, port, nil
}
