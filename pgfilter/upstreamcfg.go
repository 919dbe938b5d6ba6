package pgfilter

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/config"
)

// UpstreamConfig is the connection configuration custos logs in to res
// with, the gateway-held password read, for the parts of custos that query
// a resource on their own behalf (the discovery pass). Like the sessions'
// upstream logins it never falls back from TLS to plaintext and ignores the
// environment.
func UpstreamConfig(res *config.Resource) (*pgconn.Config, error) {
	cfg, err := upstreamConfig(res)
	if err != nil {
		return nil, fmt.Errorf("resource %s: %w", res.Name, err)
	}
	password, err := res.Password.Read()
	if err != nil {
		return nil, fmt.Errorf("resource %s: password: %w", res.Name, err)
	}
	cfg.Password = password
	cfg.RuntimeParams["application_name"] = "custos discovery"
	cfg.RuntimeParams["client_encoding"] = "UTF8"
	return cfg, nil
}
