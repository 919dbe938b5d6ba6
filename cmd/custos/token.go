package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/custos-dev/custos/internal/devissuer"
)

// runToken mints a JWT from the dev issuer kept in the data dir.
func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("custos token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir, "data dir of `custos dev`")
	sub := fs.String("sub", "", "subject (the Postgres user name to connect as)")
	groups := fs.String("groups", "", "comma-separated groups")
	act := fs.String("act", "", "the human the subject acts for (act claim)")
	email := fs.String("email", "", "email claim")
	aud := fs.String("aud", devissuer.DefaultAudience, "audience")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sub == "" {
		return fmt.Errorf("--sub is required")
	}
	if *ttl <= 0 {
		return fmt.Errorf("--ttl must be positive")
	}
	iss, err := devissuer.Open(*dataDir)
	if err != nil {
		return err
	}
	if iss.URL() == "" {
		return fmt.Errorf("no dev issuer in %s: run `custos dev --data-dir %s` first", *dataDir, *dataDir)
	}
	var gs []string
	for _, g := range strings.Split(*groups, ",") {
		if g = strings.TrimSpace(g); g != "" {
			gs = append(gs, g)
		}
	}
	tok, err := iss.Mint(devissuer.MintRequest{
		Subject: *sub, Groups: gs, Act: *act, Email: *email, Audience: *aud, TTL: *ttl,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
