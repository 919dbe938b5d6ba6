// Package config holds custos' YAML configuration: its types, defaults and
// validation. Every validation error names the offending field.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole custos configuration file.
type Config struct {
	// DataDir holds keys, the journal and other state.
	DataDir   string     `yaml:"data_dir"`
	Listeners Listeners  `yaml:"listeners"`
	OIDC      OIDC       `yaml:"oidc"`
	Sessions  Sessions   `yaml:"sessions"`
	Masking   Masking    `yaml:"masking"`
	Policy    Policy     `yaml:"policy"`
	Resources []Resource `yaml:"resources"`
}

// Policy configures the OPA policy that decides every statement. It cannot
// be turned off: no policy means deny.
type Policy struct {
	// Dir holds the Rego policy and data files; empty uses the embedded
	// default PCI policy. The directory is watched and reloaded on change
	// (and on SIGHUP); a broken policy keeps the previous one.
	Dir string `yaml:"dir"`
	// Timeout bounds one evaluation (a timeout denies).
	Timeout time.Duration `yaml:"timeout"`
	// CacheEntries bounds the decision cache; -1 turns it off.
	CacheEntries int `yaml:"cache_entries"`
	// ClassifierCacheEntries bounds the parsed-statement cache.
	ClassifierCacheEntries int `yaml:"classifier_cache_entries"`
}

// Masking configures how card numbers are shown. Masking itself is always
// on: every server-to-client path is inspected.
type Masking struct {
	// DefaultStrategy applies to detected PANs: last4 (default), redact,
	// null, drop or hmac. bin_last4 is only granted by a policy decision.
	DefaultStrategy string `yaml:"default_strategy"`
	// HMACKey keys the hmac strategy (at least 32 bytes).
	HMACKey *Secret `yaml:"hmac_key"`
}

// Listeners are the addresses custos serves on.
type Listeners struct {
	Postgres PostgresListener `yaml:"postgres"`
	GRPC     Listener         `yaml:"grpc"`
	Admin    Listener         `yaml:"admin"`
}

// Listener is a plain TCP listen address.
type Listener struct {
	Address string `yaml:"address"`
}

// PostgresListener is the client-facing Postgres wire listener (pgfilter).
type PostgresListener struct {
	Address string `yaml:"address"`
	// TLS is the certificate presented to clients on SSLRequest or direct TLS.
	TLS TLSFiles `yaml:"tls"`
	// PasswordTransport says where the token-as-password may travel:
	// "tls" (only over TLS), "tls_or_loopback" (default) or "any".
	PasswordTransport string `yaml:"password_transport"`
	// OAuthBearer offers SASL OAUTHBEARER (RFC 7628) instead of the
	// cleartext password exchange.
	OAuthBearer bool `yaml:"oauthbearer"`
	// MaxMessageBytes caps one wire message in either direction.
	MaxMessageBytes int `yaml:"max_message_bytes"`
}

// TLSFiles names a PEM certificate and key.
type TLSFiles struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// OIDC lists the token issuers custos trusts.
type OIDC struct {
	Issuers []Issuer `yaml:"issuers"`
	// ClockSkew is tolerated on exp and nbf.
	ClockSkew time.Duration `yaml:"clock_skew"`
}

// Issuer is one trusted OIDC issuer.
type Issuer struct {
	URL         string   `yaml:"url"`
	Audiences   []string `yaml:"audiences"`
	GroupsClaim string   `yaml:"groups_claim"`
	// UserClaim is the claim the Postgres startup user must equal.
	UserClaim  string   `yaml:"user_claim"`
	Algorithms []string `yaml:"algorithms"`
	// CAFile verifies the issuer's HTTPS certificate (system roots if empty).
	CAFile string `yaml:"ca_file"`
}

// Sessions bounds how long a session may live (PCI DSS 8.2.8).
type Sessions struct {
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// TokenGrace lets a session outlive its token's expiry by this much.
	TokenGrace time.Duration `yaml:"token_grace"`
	// MaxPerPrincipal caps concurrent sessions per token subject (0 = no cap).
	MaxPerPrincipal int `yaml:"max_per_principal"`
	// ShutdownGrace is how long sessions may finish on shutdown.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

// Resource is one protected upstream.
type Resource struct {
	Name string `yaml:"name"`
	// Type is "postgres".
	Type     string            `yaml:"type"`
	Address  string            `yaml:"address"`
	Database string            `yaml:"database"`
	User     string            `yaml:"user"`
	Password Secret            `yaml:"password"`
	TLS      UpstreamTLS       `yaml:"tls"`
	Labels   map[string]string `yaml:"labels"`
}

// Secret is read from an environment variable or a file, never written in
// the config itself.
type Secret struct {
	Env  string `yaml:"env"`
	File string `yaml:"file"`
}

// UpstreamTLS is how custos reaches an upstream database.
type UpstreamTLS struct {
	// Mode is disable, require, verify-ca or verify-full (default).
	Mode       string `yaml:"mode"`
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"`
}

// Password transports accepted by PostgresListener.PasswordTransport.
const (
	TransportTLS           = "tls"
	TransportTLSOrLoopback = "tls_or_loopback"
	TransportAny           = "any"
)

// Defaults.
const (
	DefaultMaxMessageBytes = 256 << 20
	DefaultIdleTimeout     = 15 * time.Minute
	DefaultShutdownGrace   = 30 * time.Second
	DefaultClockSkew       = 30 * time.Second
)

// Load reads, defaults and validates the YAML file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(f)
}

// Parse decodes YAML (unknown fields are errors), applies defaults and validates.
func Parse(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// ApplyDefaults fills unset fields with their defaults.
func (c *Config) ApplyDefaults() {
	if c.DataDir == "" {
		c.DataDir = ".custos"
	}
	pl := &c.Listeners.Postgres
	if pl.PasswordTransport == "" {
		pl.PasswordTransport = TransportTLSOrLoopback
	}
	if pl.MaxMessageBytes == 0 {
		pl.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.OIDC.ClockSkew == 0 {
		c.OIDC.ClockSkew = DefaultClockSkew
	}
	for i := range c.OIDC.Issuers {
		is := &c.OIDC.Issuers[i]
		if is.GroupsClaim == "" {
			is.GroupsClaim = "groups"
		}
		if is.UserClaim == "" {
			is.UserClaim = "sub"
		}
		if len(is.Algorithms) == 0 {
			is.Algorithms = []string{"RS256", "ES256", "EdDSA"}
		}
	}
	if c.Policy.Timeout == 0 {
		c.Policy.Timeout = 100 * time.Millisecond
	}
	if c.Sessions.IdleTimeout == 0 {
		c.Sessions.IdleTimeout = DefaultIdleTimeout
	}
	if c.Sessions.ShutdownGrace == 0 {
		c.Sessions.ShutdownGrace = DefaultShutdownGrace
	}
	for i := range c.Resources {
		r := &c.Resources[i]
		if r.Type == "" {
			r.Type = "postgres"
		}
		if r.TLS.Mode == "" {
			r.TLS.Mode = "verify-full"
		}
	}
}

// FieldError is a validation error naming the field at fault.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Validate checks the configuration and returns every problem found, each
// naming its field.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	checkAddr := func(field, addr string, required bool) {
		if addr == "" {
			if required {
				add(field, "is required")
			}
			return
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			add(field, "%q is not host:port", addr)
		}
	}
	pl := c.Listeners.Postgres
	checkAddr("listeners.postgres.address", pl.Address, true)
	checkAddr("listeners.grpc.address", c.Listeners.GRPC.Address, false)
	checkAddr("listeners.admin.address", c.Listeners.Admin.Address, false)
	if (pl.TLS.CertFile == "") != (pl.TLS.KeyFile == "") {
		add("listeners.postgres.tls", "cert_file and key_file go together")
	}
	switch pl.PasswordTransport {
	case TransportTLS:
		if pl.TLS.CertFile == "" {
			add("listeners.postgres.password_transport", "%q needs listeners.postgres.tls", pl.PasswordTransport)
		}
	case TransportTLSOrLoopback, TransportAny:
	default:
		add("listeners.postgres.password_transport", "must be tls, tls_or_loopback or any, not %q", pl.PasswordTransport)
	}
	if pl.MaxMessageBytes < 1<<16 {
		add("listeners.postgres.max_message_bytes", "must be at least 65536")
	}
	if len(c.OIDC.Issuers) == 0 {
		add("oidc.issuers", "at least one issuer is required")
	}
	seenIss := map[string]bool{}
	for i, is := range c.OIDC.Issuers {
		f := fmt.Sprintf("oidc.issuers[%d]", i)
		switch {
		case is.URL == "":
			add(f+".url", "is required")
		case !strings.HasPrefix(is.URL, "https://") && !strings.HasPrefix(is.URL, "http://"):
			add(f+".url", "%q must be an http(s) URL", is.URL)
		case seenIss[is.URL]:
			add(f+".url", "%q is listed twice", is.URL)
		}
		seenIss[is.URL] = true
		if len(is.Audiences) == 0 {
			add(f+".audiences", "at least one audience is required")
		}
		for j, alg := range is.Algorithms {
			if !slices.Contains(allowedAlgs, alg) {
				add(fmt.Sprintf("%s.algorithms[%d]", f, j), "%q is not allowed (use one of %s)", alg, strings.Join(allowedAlgs, ", "))
			}
		}
	}
	if c.OIDC.ClockSkew < 0 || c.OIDC.ClockSkew > 5*time.Minute {
		add("oidc.clock_skew", "must be between 0 and 5m")
	}
	switch c.Masking.DefaultStrategy {
	case "", "last4", "redact", "null", "drop":
	case "hmac":
		if c.Masking.HMACKey == nil {
			add("masking.hmac_key", "is required by default_strategy hmac")
		}
	default:
		add("masking.default_strategy", "must be last4, redact, null, drop or hmac, not %q", c.Masking.DefaultStrategy)
	}
	if k := c.Masking.HMACKey; k != nil && (k.Env == "") == (k.File == "") {
		add("masking.hmac_key", "set exactly one of env or file")
	}
	if c.Policy.Dir != "" {
		if fi, err := os.Stat(c.Policy.Dir); err != nil || !fi.IsDir() {
			add("policy.dir", "%q is not a readable directory", c.Policy.Dir)
		}
	}
	if c.Policy.Timeout < 0 || c.Policy.Timeout > 10*time.Second {
		add("policy.timeout", "must be between 0 and 10s")
	}
	if c.Sessions.IdleTimeout < 0 {
		add("sessions.idle_timeout", "must not be negative")
	}
	if c.Sessions.TokenGrace < 0 {
		add("sessions.token_grace", "must not be negative")
	}
	if c.Sessions.MaxPerPrincipal < 0 {
		add("sessions.max_per_principal", "must not be negative")
	}
	if len(c.Resources) == 0 {
		add("resources", "at least one resource is required")
	}
	seenRes := map[string]bool{}
	for i, r := range c.Resources {
		f := fmt.Sprintf("resources[%d]", i)
		if r.Name == "" {
			add(f+".name", "is required")
		} else if seenRes[r.Name] {
			add(f+".name", "%q is listed twice", r.Name)
		}
		seenRes[r.Name] = true
		if r.Type != "postgres" {
			add(f+".type", "%q is not supported (postgres)", r.Type)
		}
		checkAddr(f+".address", r.Address, true)
		if r.Database == "" {
			add(f+".database", "is required")
		}
		if r.User == "" {
			add(f+".user", "is required")
		}
		if (r.Password.Env == "") == (r.Password.File == "") {
			add(f+".password", "set exactly one of env or file")
		}
		switch r.TLS.Mode {
		case "disable", "require", "verify-ca", "verify-full":
		default:
			add(f+".tls.mode", "must be disable, require, verify-ca or verify-full, not %q", r.TLS.Mode)
		}
	}
	return errors.Join(errs...)
}

var allowedAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// ErrNoSecret is returned when a resource's credential cannot be read.
var ErrNoSecret = errors.New("credential not available")

// Read returns the secret's value. The value is never logged.
func (s Secret) Read() (string, error) {
	switch {
	case s.Env != "":
		v, ok := os.LookupEnv(s.Env)
		if !ok || v == "" {
			return "", fmt.Errorf("%w: environment variable %s is not set", ErrNoSecret, s.Env)
		}
		return v, nil
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrNoSecret, err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("%w: file %s is empty", ErrNoSecret, s.File)
		}
		return v, nil
	}
	return "", fmt.Errorf("%w: no env or file configured", ErrNoSecret)
}

// String never reveals the secret, only where it comes from.
func (s Secret) String() string {
	if s.Env != "" {
		return "env:" + s.Env
	}
	return "file:" + s.File
}

// ResourceByDatabase finds the resource a client's startup database names:
// either the resource name or its upstream database.
func (c *Config) ResourceByDatabase(db string) (*Resource, bool) {
	for i := range c.Resources {
		if c.Resources[i].Name == db {
			return &c.Resources[i], true
		}
	}
	for i := range c.Resources {
		if c.Resources[i].Database == db {
			return &c.Resources[i], true
		}
	}
	return nil, false
}
