package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/xds"
)

const xdsUsage = `usage: custos xds <command> [flags]

commands:
  dump    print the Envoy configuration a config file serves, as YAML (--config, --node)
`

// runXDS runs the xds subcommands.
func runXDS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, xdsUsage)
		return errors.New("xds: a command is required")
	}
	switch args[0] {
	case "dump":
		return runXDSDump(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, xdsUsage)
		return nil
	}
	fmt.Fprint(stderr, xdsUsage)
	return fmt.Errorf("xds: unknown command %q", args[0])
}

// runXDSDump prints the snapshot of a config file for each of its node
// ids (or for --node): clusters, endpoints, listeners and routes with
// their versions, as custos serves them to Envoy.
func runXDSDump(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("custos xds dump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "custos.yaml", "config file")
	node := fs.String("node", "", "print for this node id only (default: every xds.node_ids entry)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("xds dump: unexpected arguments %v", fs.Args())
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	nodes := cfg.XDS.NodeIDs
	if *node != "" {
		nodes = []string{*node}
	}
	if len(nodes) == 0 {
		return errors.New("xds dump: xds.node_ids is empty, custos serves no Envoy (--node prints what it would serve)")
	}
	snap, err := xds.Snapshot(cfg)
	if err != nil {
		return err
	}
	return xds.WriteYAML(stdout, nodes, snap)
}
