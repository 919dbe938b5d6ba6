// Package config holds custos' YAML configuration: its types, defaults and
// validation. Every validation error names the offending field.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
	Approvals Approvals  `yaml:"approvals"`
	Resources []Resource `yaml:"resources"`
	// HTTPServices are the protected HTTP APIs Envoy fronts.
	HTTPServices []HTTPService `yaml:"http_services"`
	// XDS is the Envoy configuration custos serves over xDS.
	XDS XDS `yaml:"xds"`
	// Audit is the audit journal.
	Audit Audit `yaml:"audit"`
	// Discovery finds card numbers in columns not declared cardholder data.
	Discovery Discovery `yaml:"discovery"`
	// ExtProc configures the Envoy callouts (ext_authz and ext_proc).
	ExtProc ExtProc `yaml:"extproc"`
}

// ExtProc configures custos' Envoy callouts.
type ExtProc struct {
	// GrantKey keys the seal (HMAC-SHA256) of the decision ext_authz hands
	// ext_proc through Envoy's dynamic metadata, bound to the request's
	// x-request-id and valid for a minute; ext_proc refuses a request
	// whose decision it cannot verify. At least 32 bytes. Every replica
	// one Envoy calls must have the same key. Empty:
	// DATA_DIR/extproc/grant.key, generated when missing (one custos only).
	GrantKey *Secret `yaml:"grant_key"`
}

// Audit configures the audit journal (DATA_DIR/audit): every
// decision-bearing action recorded, hash-chained, with signed checkpoints,
// and exported as OTLP logs.
type Audit struct {
	// Enabled keeps the journal (default true).
	Enabled *bool `yaml:"enabled"`
	// SigningKeyFile holds the Ed25519 checkpoint signing key (`custos
	// audit key` prints its verifier key). Empty: DATA_DIR/audit/signing.key,
	// generated when missing.
	SigningKeyFile string `yaml:"signing_key_file"`
	// HMACKey keys the fingerprints that stand for PANs in records (at
	// least 32 bytes). Empty: DATA_DIR/audit/fingerprint.key, generated
	// when missing.
	HMACKey *Secret `yaml:"hmac_key"`
	// CheckpointInterval is how often a signed checkpoint is written, idle
	// or not.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// SegmentBytes is the size after which a new segment file starts.
	SegmentBytes int64 `yaml:"segment_bytes"`
	// Export says where records are shipped from the journal.
	Export AuditExport `yaml:"export"`
	// FailClosed refuses sessions and statements on resources marked
	// cardholder data (label pci: cde) while the journal cannot be written,
	// and ends a session whose statement record could not be kept, its
	// results withheld (default true).
	FailClosed *bool `yaml:"fail_closed"`
	// SyncInterval sets how durable a statement's record is before the
	// client sees the statement complete, for statements that touched no
	// cardholder data and changed nothing (plain reads whose results
	// custos did not mask): written to the journal file, surviving custos
	// being killed or crashing, and fsynced (group commit) at most this
	// much later. Every other record (masked results, refusals, approvals,
	// writes, DDL, authentication failures, control failures, what a
	// policy's fsync asks for) is fsynced before the client hears the
	// outcome, surviving a power loss. 0 fsyncs every record that way.
	// Unset: DefaultAuditSyncInterval; at most 1s.
	SyncInterval *time.Duration `yaml:"sync_interval"`
	// CommitDelay is how long a group commit waits for more records while
	// sessions record concurrently, so that one fsync covers more of them:
	// fsyncs start at most once per CommitDelay, and a statement's
	// completion waits up to that much longer. It applies once five or
	// more records wait for a fsync; fewer sessions are not delayed. 0
	// turns it off; unset: DefaultAuditCommitDelay. At most 100ms; ignored
	// when SyncInterval is set.
	CommitDelay *time.Duration `yaml:"commit_delay"`
	// ReplayRows is how many (masked) result rows of each statement its
	// record keeps for `custos replay` (default 100; -1 keeps none).
	ReplayRows int `yaml:"replay_rows"`
}

// AuditExport configures the export of audit records.
type AuditExport struct {
	// OTLP ships records as OTLP logs, configured by the standard
	// OTEL_EXPORTER_OTLP_* variables. Unset: on when
	// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT is set.
	OTLP *bool `yaml:"otlp"`
}

// IsEnabled reports whether the journal is kept (unset: yes).
func (a *Audit) IsEnabled() bool { return a.Enabled == nil || *a.Enabled }

// IsFailClosed reports whether cardholder-data sessions are refused while
// the journal cannot be written (unset: yes).
func (a *Audit) IsFailClosed() bool { return a.FailClosed == nil || *a.FailClosed }

// OTLPEnabled reports whether records are exported as OTLP logs; getenv
// is os.Getenv outside tests.
func (e AuditExport) OTLPEnabled(getenv func(string) string) bool {
	if e.OTLP != nil {
		return *e.OTLP
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") != ""
}

// LabelPCI is the resource label whose value LabelCDE marks cardholder
// data.
const (
	LabelPCI = "pci"
	LabelCDE = "cde"
)

// CardholderData reports whether the resource is marked cardholder data
// (label pci: cde).
func (r *Resource) CardholderData() bool { return r.Labels[LabelPCI] == LabelCDE }

// HTTPService is one protected HTTP API: Envoy routes its domains and path
// prefixes to the upstream, asking custos (ext_authz) before each request
// and letting it process (ext_proc) what goes through.
type HTTPService struct {
	// Name is the resource name policy sees; unique among resources and
	// services.
	Name string `yaml:"name"`
	// Domains are the Host values routed to this service ("*.example.com"
	// and "*" wildcards as Envoy allows); a port in the Host is ignored.
	Domains []string `yaml:"domains"`
	// PathPrefixes are the paths routed (default ["/"]).
	PathPrefixes []string `yaml:"path_prefixes"`
	// Address is the upstream host:port.
	Address string `yaml:"address"`
	// TLS is how Envoy reaches the upstream; ca_file is a path on Envoy's
	// host and is required by verify-ca and verify-full.
	TLS    UpstreamTLS       `yaml:"tls"`
	Labels map[string]string `yaml:"labels"`
	// Processing says which parts of a request and its response Envoy
	// sends to custos' external processor.
	Processing Processing `yaml:"processing"`
}

// Processing is an ext_proc processing mode.
type Processing struct {
	// RequestHeaders and ResponseHeaders are send (default) or skip.
	RequestHeaders  string `yaml:"request_headers"`
	ResponseHeaders string `yaml:"response_headers"`
	// RequestBody is none (default), streamed, buffered or buffered_partial.
	RequestBody string `yaml:"request_body"`
	// ResponseBody is buffered (default: bodies are masked whole), none,
	// streamed or buffered_partial.
	ResponseBody string `yaml:"response_body"`
}

// Processing modes.
const (
	ProcessSend            = "send"
	ProcessSkip            = "skip"
	ProcessNone            = "none"
	ProcessStreamed        = "streamed"
	ProcessBuffered        = "buffered"
	ProcessBufferedPartial = "buffered_partial"
)

// XDS configures the Envoy configuration custos serves over xDS (ADS on
// the gRPC listener): a listener per Postgres resource, one HTTP listener
// for the HTTP services, and the clusters behind them.
type XDS struct {
	// NodeIDs are the Envoy node ids (node.id in Envoy's bootstrap) that
	// are served the configuration; an xDS request from any other node is
	// refused. Empty: custos configures no Envoy.
	NodeIDs []string `yaml:"node_ids"`
	// GRPCAddress is custos' gRPC listener as Envoy reaches it (ext_authz,
	// ext_proc). Default: listeners.grpc.address, a wildcard host
	// becoming 127.0.0.1.
	GRPCAddress string `yaml:"grpc_address"`
	// PgfilterAddress is custos' Postgres listener as Envoy reaches it.
	// Default: listeners.postgres.address, likewise.
	PgfilterAddress string `yaml:"pgfilter_address"`
	// ListenHost is the IP address Envoy's listeners bind (default 0.0.0.0).
	ListenHost string `yaml:"listen_host"`
	// HTTPPort is the port of Envoy's listener for http_services (default 8080).
	HTTPPort int `yaml:"http_port"`
	// HTTPTLS is the certificate Envoy presents on its HTTP listener
	// (files on Envoy's host); empty serves plain HTTP.
	HTTPTLS TLSFiles `yaml:"http_tls"`
	// PostgresPorts gives each Postgres resource, by name, the port of its
	// Envoy listener. Every Postgres resource needs one when node_ids is set.
	PostgresPorts map[string]int `yaml:"postgres_ports"`
	// GRPCTLS is how Envoy reaches custos' gRPC listener (cluster
	// custos-grpc, for ext_authz and ext_proc): required when the listener
	// speaks TLS. Files on Envoy's host.
	GRPCTLS EnvoyClientTLS `yaml:"grpc_tls"`
}

// EnvoyClientTLS is the TLS of an Envoy cluster that calls custos: the
// CA that verifies custos' certificate and the client certificate Envoy
// presents. Paths are on Envoy's host.
type EnvoyClientTLS struct {
	// CAFile verifies custos' server certificate.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are Envoy's client certificate and key; required
	// when the listener requires client certificates.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the SNI sent and the name custos' certificate must
	// carry (default: the host of grpc_address; an IP address is matched
	// as an IP SAN and sends no SNI).
	ServerName string `yaml:"server_name"`
}

// IsZero reports whether nothing is set.
func (e EnvoyClientTLS) IsZero() bool { return e == EnvoyClientTLS{} }

// Enabled reports whether custos configures any Envoy.
func (x *XDS) Enabled() bool { return len(x.NodeIDs) > 0 }

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

// Approvals configures where statements parked for approval are kept and
// who hears of new requests and decisions.
type Approvals struct {
	// Store is sqlite (default: one file in the data dir, for a single
	// custos) or postgres (shared by several replicas; LISTEN/NOTIFY wakes
	// the replica holding a parked statement).
	Store string `yaml:"store"`
	// SQLitePath is the sqlite store's file (default DATA_DIR/approvals.db).
	SQLitePath string `yaml:"sqlite_path"`
	// PostgresDSN is the postgres store's connection string.
	PostgresDSN *Secret `yaml:"postgres_dsn"`
	// Replica names this process among replicas sharing a store (default:
	// the host name).
	Replica string `yaml:"replica"`
	// PublicURL is the admin listener's base URL as approvers reach it;
	// notices and webhooks link to PUBLIC_URL/approvals/ID. Default:
	// http:// and the admin listener's address (a wildcard host becoming
	// 127.0.0.1).
	PublicURL string `yaml:"public_url"`
	// SweepInterval is how often requests past their TTL are expired.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// Webhooks are told of every new request and decision.
	Webhooks []Webhook `yaml:"webhooks"`
}

// Approval stores.
const (
	StoreSQLite   = "sqlite"
	StorePostgres = "postgres"
)

// Webhook is one notification endpoint.
type Webhook struct {
	URL string `yaml:"url"`
	// Format is json (default: custos' own event document) or slack (an
	// incoming-webhook message).
	Format string `yaml:"format"`
	// Secret, when set, signs each body (HMAC-SHA256 header).
	Secret *Secret `yaml:"secret"`
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
	GRPC     GRPCListener     `yaml:"grpc"`
	Admin    Listener         `yaml:"admin"`
	// Pprof serves Go's runtime profiles; off unless its address is set.
	Pprof PprofListener `yaml:"pprof"`
}

// GRPCListener is the listener Envoy calls: ext_authz, ext_proc, xDS
// (ADS) and gRPC health. Whoever reaches it can ask for decisions and
// read the whole Envoy configuration, so it requires mutual TLS: a client
// certificate issued by TLS.ClientCAFile (and, with
// TLS.AllowedClients, naming an allowed identity).
type GRPCListener struct {
	Address string `yaml:"address"`
	// TLS is custos' certificate and the CA of the clients' certificates.
	TLS GRPCTLS `yaml:"tls"`
	// InsecureNoClientAuth accepts callers without a client certificate:
	// anyone who reaches the listener gets decisions and the xDS
	// configuration. With tls.cert_file the listener still speaks TLS;
	// without, plaintext. Only for a listener no one else can reach.
	InsecureNoClientAuth bool `yaml:"insecure_no_client_auth"`
}

// GRPCTLS is the mutual TLS of the gRPC listener.
type GRPCTLS struct {
	// CertFile and KeyFile are custos' server certificate and key (PEM).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile holds the CA certificates (PEM) a client certificate
	// must chain to.
	ClientCAFile string `yaml:"client_ca_file"`
	// AllowedClients, when set, are the client identities accepted: a
	// certificate is accepted when one of its URI SANs, DNS SANs or its
	// subject common name equals an entry. Empty: any certificate
	// ClientCAFile issued.
	AllowedClients []string `yaml:"allowed_clients"`
}

// MutualTLS reports whether the gRPC listener requires client
// certificates.
func (g *GRPCListener) MutualTLS() bool { return g.Address != "" && !g.InsecureNoClientAuth }

// ServesTLS reports whether the gRPC listener speaks TLS.
func (g *GRPCListener) ServesTLS() bool { return g.Address != "" && g.TLS.CertFile != "" }

// PprofListener serves Go's profiles (/debug/pprof/: goroutine dumps,
// heap, CPU profiles, execution traces) on a listener of its own, never
// on the admin listener.
type PprofListener struct {
	// Address is where profiles are served; empty (the default) serves
	// none. It must be a loopback address unless InsecureAllowRemote.
	Address string `yaml:"address"`
	// InsecureAllowRemote accepts an address other hosts reach: profiles
	// then answer anyone who reaches it, without authentication.
	InsecureAllowRemote bool `yaml:"insecure_allow_remote"`
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
	// ProxyProtocol is "off" (default: clients connect directly) or
	// "required": every connection must come from one of TrustedProxies
	// and begin with a PROXY protocol header (v1 or v2), whose source
	// address is then the client's address. A required listener accepts a
	// token only over TLS from the client itself, whatever
	// PasswordTransport says: the proxy's hop proves nothing about the
	// client's.
	ProxyProtocol string `yaml:"proxy_protocol"`
	// TrustedProxies are the addresses (CIDR or single IP) allowed to send
	// a PROXY header; required with proxy_protocol required.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// PROXY protocol modes of PostgresListener.ProxyProtocol.
const (
	ProxyProtocolOff      = "off"
	ProxyProtocolRequired = "required"
)

// TrustedProxyPrefixes parses TrustedProxies: a single IP becomes a
// prefix of its full length.
func (l PostgresListener) TrustedProxyPrefixes() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(l.TrustedProxies))
	for _, s := range l.TrustedProxies {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix: %w", s, err)
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zones are not allowed", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
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
	// MaxPerPrincipal caps concurrent sessions per token subject (0: the
	// default, DefaultMaxPerPrincipal; -1: no cap).
	MaxPerPrincipal int `yaml:"max_per_principal"`
	// MaxPerGroup caps the concurrent sessions of all principals in a
	// group, each group on its own (nil: DefaultMaxPerGroup; empty: none).
	// A principal in several groups counts toward each.
	MaxPerGroup map[string]int `yaml:"max_per_group"`
	// MaxTotal caps this replica's sessions, under the upstream's
	// max_connections (0: DefaultMaxTotal; -1: no cap).
	MaxTotal int `yaml:"max_total"`
	// Reserve keeps the last sessions of MaxTotal for principals in its
	// groups (approvers), so that no one else's sessions lock them out.
	Reserve SessionReserve `yaml:"reserve"`
	// OpenRate bounds how fast one principal opens sessions: each new one
	// starts and logs in a PostgreSQL backend, work the database does for
	// everyone at once, so a principal closing and reopening sessions in a
	// loop would slow every other principal's statements.
	OpenRate SessionOpenRate `yaml:"open_rate"`
	// ShutdownGrace is how long sessions may finish on shutdown.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

// SessionReserve is the part of Sessions.MaxTotal only principals in
// Groups may use.
type SessionReserve struct {
	Groups []string `yaml:"groups"`
	// Sessions is how many (0 with no Groups: DefaultReserve; -1: none).
	Sessions int `yaml:"sessions"`
}

// SessionOpenRate is a token bucket per principal: Burst sessions at
// once, then PerSecond.
type SessionOpenRate struct {
	// PerSecond is the sustained rate (0: DefaultOpenRate; -1: no bound).
	PerSecond float64 `yaml:"per_second"`
	// Burst is how many may open at once (0: DefaultOpenBurst).
	Burst int `yaml:"burst"`
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
	// Logins, when set, give each principal's sessions the upstream login
	// of the first entry naming one of its groups, so that PostgreSQL
	// itself holds each group to least privilege and its views and logs
	// name the group's role; a principal in none of them is refused (fail
	// closed). List the stricter logins first: the default policy treats a
	// principal in both agents and dba as an agent, and so must the
	// database. User and Password stay custos' own login, for what custos
	// queries itself (result column origins, discovery). Without Logins
	// every session logs in as User.
	Logins []UpstreamLogin `yaml:"logins"`
}

// UpstreamLogin is the PostgreSQL login custos holds for one group.
type UpstreamLogin struct {
	Group    string `yaml:"group"`
	User     string `yaml:"user"`
	Password Secret `yaml:"password"`
	// ApprovedRole, when set, is the role custos alone takes (SET ROLE,
	// then RESET ROLE, around the statement, in its transaction) for a
	// statement approvers approved, for a login that cannot write itself:
	// the login is a NOINHERIT member of it, and custos refuses SET ROLE to
	// every client. Empty: approved statements run as User.
	ApprovedRole string `yaml:"approved_role"`
	// PerPrincipal gives each principal its own PostgreSQL user, so that
	// PostgreSQL's views and logs name the principal and no two
	// principals see each other's sessions in pg_stat_activity: custos
	// creates it on the principal's first connect (with the resource's own
	// login, which needs CREATEROLE), a member of User (whose privileges it
	// inherits; ApprovedRole stays reachable only by SET ROLE) with a
	// random password only this custos process holds, and disables it
	// (NOLOGIN, no password) when the principal's last session ends. One
	// custos replica per resource: replicas would reset each other's
	// passwords.
	PerPrincipal bool `yaml:"per_principal"`
}

// LoginFor returns the login for a principal's groups: the first entry of
// Logins naming one of them, or nil. Order in Logins is the precedence.
func (r *Resource) LoginFor(groups []string) *UpstreamLogin {
	for i := range r.Logins {
		if slices.Contains(groups, r.Logins[i].Group) {
			return &r.Logins[i]
		}
	}
	return nil
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
	// Session caps: under PostgreSQL's default max_connections (100, 3 of
	// them for superusers) with room for custos' catalog connections.
	DefaultMaxPerPrincipal = 32
	DefaultMaxTotal        = 90
	DefaultReserveSessions = 10
	// Session opens per principal: a full pool's sessions twice over at
	// once (a pool that closed reconnects at once: a client restarting, a
	// benchmark's warm-up then its run), then two a second (an agent
	// running psql per command is well inside it; each open costs
	// PostgreSQL a backend's start and a SCRAM exchange).
	DefaultOpenRate        = 2
	DefaultOpenBurst       = 2 * DefaultMaxPerPrincipal
	DefaultClockSkew       = 30 * time.Second
	DefaultSweepInterval   = 5 * time.Second
	DefaultEnvoyListenHost = "0.0.0.0"
	DefaultEnvoyHTTPPort   = 8080
	// The audit journal's defaults (those of internal/audit).
	DefaultAuditCheckpointInterval = 30 * time.Second
	DefaultAuditSegmentBytes       = 64 << 20
	DefaultAuditReplayRows         = 100
	DefaultAuditCommitDelay        = time.Millisecond
	DefaultAuditSyncInterval       = 10 * time.Millisecond
)

// DefaultMaxPerGroup caps the sessions of the default policy's agents, so
// that agents together leave room for everyone else.
func DefaultMaxPerGroup() map[string]int { return map[string]int{"agents": 48} }

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
	c.Discovery.applyDefaults()
	if c.DataDir == "" {
		c.DataDir = ".custos"
	}
	pl := &c.Listeners.Postgres
	pl.ProxyProtocol = cmp.Or(pl.ProxyProtocol, ProxyProtocolOff)
	if pl.PasswordTransport == "" {
		pl.PasswordTransport = TransportTLSOrLoopback
		if pl.ProxyProtocol == ProxyProtocolRequired {
			// Behind a proxy only TLS from the client proves the path.
			pl.PasswordTransport = TransportTLS
		}
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
	ap := &c.Approvals
	ap.Store = cmp.Or(ap.Store, StoreSQLite)
	if ap.Store == StoreSQLite && ap.SQLitePath == "" {
		ap.SQLitePath = filepath.Join(c.DataDir, "approvals.db")
	}
	if ap.Replica == "" {
		ap.Replica, _ = os.Hostname()
	}
	if ap.PublicURL == "" && c.Listeners.Admin.Address != "" {
		ap.PublicURL = "http://" + reachable(c.Listeners.Admin.Address)
	}
	if ap.SweepInterval == 0 {
		ap.SweepInterval = DefaultSweepInterval
	}
	for i := range ap.Webhooks {
		ap.Webhooks[i].Format = cmp.Or(ap.Webhooks[i].Format, "json")
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
	if c.Sessions.MaxPerPrincipal == 0 {
		c.Sessions.MaxPerPrincipal = DefaultMaxPerPrincipal
	}
	if c.Sessions.MaxPerGroup == nil {
		c.Sessions.MaxPerGroup = DefaultMaxPerGroup()
	}
	if c.Sessions.MaxTotal == 0 {
		c.Sessions.MaxTotal = DefaultMaxTotal
	}
	if rs := &c.Sessions.Reserve; rs.Sessions == 0 && rs.Groups == nil {
		rs.Groups, rs.Sessions = []string{"dba"}, DefaultReserveSessions
	}
	if c.Sessions.OpenRate.PerSecond == 0 {
		c.Sessions.OpenRate.PerSecond = DefaultOpenRate
	}
	if c.Sessions.OpenRate.Burst == 0 {
		c.Sessions.OpenRate.Burst = DefaultOpenBurst
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
	for i := range c.HTTPServices {
		s := &c.HTTPServices[i]
		if len(s.PathPrefixes) == 0 {
			s.PathPrefixes = []string{"/"}
		}
		if s.TLS.Mode == "" {
			s.TLS.Mode = "verify-full"
		}
		p := &s.Processing
		p.RequestHeaders = cmp.Or(p.RequestHeaders, ProcessSend)
		p.ResponseHeaders = cmp.Or(p.ResponseHeaders, ProcessSend)
		p.RequestBody = cmp.Or(p.RequestBody, ProcessNone)
		p.ResponseBody = cmp.Or(p.ResponseBody, ProcessBuffered)
	}
	x := &c.XDS
	x.GRPCAddress = cmp.Or(x.GRPCAddress, reachable(c.Listeners.GRPC.Address))
	x.PgfilterAddress = cmp.Or(x.PgfilterAddress, reachable(c.Listeners.Postgres.Address))
	x.ListenHost = cmp.Or(x.ListenHost, DefaultEnvoyListenHost)
	x.HTTPPort = cmp.Or(x.HTTPPort, DefaultEnvoyHTTPPort)
	au := &c.Audit
	if au.Enabled == nil {
		au.Enabled = new(true)
	}
	if au.FailClosed == nil {
		au.FailClosed = new(true)
	}
	au.CheckpointInterval = cmp.Or(au.CheckpointInterval, DefaultAuditCheckpointInterval)
	au.SegmentBytes = cmp.Or(au.SegmentBytes, DefaultAuditSegmentBytes)
	au.ReplayRows = cmp.Or(au.ReplayRows, DefaultAuditReplayRows)
	if au.CommitDelay == nil {
		au.CommitDelay = new(DefaultAuditCommitDelay)
	}
	if au.SyncInterval == nil {
		au.SyncInterval = new(DefaultAuditSyncInterval)
	}
}

// reachable turns a listen address into one a local client can dial: a
// wildcard or empty host becomes the loopback address.
func reachable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
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
	c.Discovery.validate(add)
	pl := c.Listeners.Postgres
	checkAddr("listeners.postgres.address", pl.Address, true)
	checkAddr("listeners.grpc.address", c.Listeners.GRPC.Address, false)
	checkAddr("listeners.admin.address", c.Listeners.Admin.Address, false)
	errs = append(errs, c.validateGRPCListener()...)
	errs = append(errs, c.validatePprof()...)
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
	switch pl.ProxyProtocol {
	case "", ProxyProtocolOff:
		if len(pl.TrustedProxies) > 0 {
			add("listeners.postgres.trusted_proxies", "has no effect with proxy_protocol off: set proxy_protocol: required or remove it")
		}
	case ProxyProtocolRequired:
		if len(pl.TrustedProxies) == 0 {
			add("listeners.postgres.trusted_proxies", "at least one address is required with proxy_protocol required")
		}
		if pl.PasswordTransport != TransportTLS {
			// A cleartext token reached the proxy in the clear, and the
			// proxy's loopback hop proves nothing about the client's.
			add("listeners.postgres.password_transport", "must be tls with proxy_protocol required (not %q): behind a proxy only TLS from the client protects the token", pl.PasswordTransport)
		}
	default:
		add("listeners.postgres.proxy_protocol", "must be off or required, not %q", pl.ProxyProtocol)
	}
	for i, tp := range pl.TrustedProxies {
		if _, err := parsePrefix(tp); err != nil {
			add(fmt.Sprintf("listeners.postgres.trusted_proxies[%d]", i), "%v", err)
		}
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
	if c.Sessions.MaxPerPrincipal < -1 {
		add("sessions.max_per_principal", "must be positive, or -1 for no cap")
	}
	if c.Sessions.MaxTotal < -1 {
		add("sessions.max_total", "must be positive, or -1 for no cap")
	}
	if r := c.Sessions.OpenRate.PerSecond; r < 0 && r != -1 {
		add("sessions.open_rate.per_second", "must be positive, or -1 for no bound")
	}
	if c.Sessions.OpenRate.Burst < 0 {
		add("sessions.open_rate.burst", "must be positive")
	}
	for _, g := range slices.Sorted(maps.Keys(c.Sessions.MaxPerGroup)) {
		if c.Sessions.MaxPerGroup[g] < 1 {
			add("sessions.max_per_group."+g, "must be positive (leave the group out for no cap)")
		}
	}
	if rs := c.Sessions.Reserve; rs.Sessions > 0 {
		if len(rs.Groups) == 0 {
			add("sessions.reserve.groups", "is required when sessions are reserved")
		}
		if c.Sessions.MaxTotal > 0 && rs.Sessions >= c.Sessions.MaxTotal {
			add("sessions.reserve.sessions", "must be below sessions.max_total (%d)", c.Sessions.MaxTotal)
		}
	} else if rs.Sessions < -1 {
		add("sessions.reserve.sessions", "must be positive, or -1 for none")
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
		errs = append(errs, validateLogins(f, r.Logins)...)
	}
	errs = append(errs, c.validateApprovals()...)
	errs = append(errs, c.validateHTTPServices(seenRes)...)
	errs = append(errs, c.validateXDS()...)
	errs = append(errs, c.validateAudit()...)
	if k := c.ExtProc.GrantKey; k != nil && (k.Env == "") == (k.File == "") {
		errs = append(errs, &FieldError{Field: "extproc.grant_key", Msg: "set exactly one of env or file"})
	}
	return errors.Join(errs...)
}

// validateLogins checks a resource's group logins; f names the resource.
func validateLogins(f string, logins []UpstreamLogin) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	seen := map[string]bool{}
	for i, l := range logins {
		lf := fmt.Sprintf("%s.logins[%d]", f, i)
		switch {
		case l.Group == "":
			add(lf+".group", "is required")
		case seen[l.Group]:
			add(lf+".group", "%q is listed twice (the first entry would always win)", l.Group)
		}
		seen[l.Group] = true
		if l.User == "" {
			add(lf+".user", "is required")
		}
		if (l.Password.Env == "") == (l.Password.File == "") {
			add(lf+".password", "set exactly one of env or file")
		}
		if l.ApprovedRole != "" && (l.ApprovedRole == l.User || strings.ContainsRune(l.ApprovedRole, 0)) {
			add(lf+".approved_role", "%q must be a role other than the login", l.ApprovedRole)
		}
	}
	return errs
}

func (c *Config) validateAudit() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	au := c.Audit
	if au.CheckpointInterval < time.Second || au.CheckpointInterval > time.Hour {
		add("audit.checkpoint_interval", "must be between 1s and 1h, not %s", au.CheckpointInterval)
	}
	if au.SegmentBytes < 1<<20 {
		add("audit.segment_bytes", "must be at least 1048576, not %d", au.SegmentBytes)
	}
	if si := au.SyncInterval; si != nil && (*si < 0 || *si > time.Second) {
		add("audit.sync_interval", "must be between 0 (fsync every record before completion) and 1s, not %s", *si)
	}
	if d := au.CommitDelay; d != nil && (*d < 0 || *d > 100*time.Millisecond) {
		add("audit.commit_delay", "must be between 0 (none) and 100ms, not %s", *d)
	}
	if au.ReplayRows < -1 || au.ReplayRows > 10000 {
		add("audit.replay_rows", "must be between -1 (none) and 10000, not %d", au.ReplayRows)
	}
	if k := au.HMACKey; k != nil && (k.Env == "") == (k.File == "") {
		add("audit.hmac_key", "set exactly one of env or file")
	}
	if f := au.SigningKeyFile; f != "" {
		if fi, err := os.Stat(f); err != nil || !fi.Mode().IsRegular() {
			add("audit.signing_key_file", "%q is not a readable file", f)
		}
	}
	if !au.IsEnabled() && au.IsFailClosed() {
		for _, r := range c.Resources {
			if r.CardholderData() {
				add("audit.fail_closed", "is true while audit is off: every session on %s (cardholder data) would be refused; set fail_closed: false to run without audit", r.Name)
				break
			}
		}
	}
	return errs
}

func (c *Config) validateApprovals() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	ap := c.Approvals
	switch ap.Store {
	case StoreSQLite:
		if ap.PostgresDSN != nil {
			add("approvals.postgres_dsn", "is only used by store postgres")
		}
	case StorePostgres:
		if ap.PostgresDSN == nil {
			add("approvals.postgres_dsn", "is required by store postgres")
		}
	default:
		add("approvals.store", "must be sqlite or postgres, not %q", ap.Store)
	}
	if ap.PublicURL != "" {
		if u, err := url.Parse(ap.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("approvals.public_url", "%q is not an http(s) URL", ap.PublicURL)
		}
	}
	if ap.SweepInterval < 0 {
		add("approvals.sweep_interval", "must not be negative")
	}
	for i, w := range ap.Webhooks {
		f := fmt.Sprintf("approvals.webhooks[%d]", i)
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(f+".url", "%q is not an http(s) URL", w.URL)
		}
		if w.Format != "json" && w.Format != "slack" {
			add(f+".format", "must be json or slack, not %q", w.Format)
		}
	}
	return errs
}

func (c *Config) validateHTTPServices(seenNames map[string]bool) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	domainOwner := map[string]string{}
	for i, s := range c.HTTPServices {
		f := fmt.Sprintf("http_services[%d]", i)
		if s.Name == "" {
			add(f+".name", "is required")
		} else if seenNames[s.Name] {
			add(f+".name", "%q is already the name of a resource or service", s.Name)
		}
		seenNames[s.Name] = true
		if len(s.Domains) == 0 {
			add(f+".domains", "at least one domain is required")
		}
		for j, d := range s.Domains {
			df := fmt.Sprintf("%s.domains[%d]", f, j)
			switch {
			case d == "" || strings.ContainsAny(d, " /"):
				add(df, "%q is not a domain", d)
			case strings.Contains(d, "]:") || (!strings.HasPrefix(d, "[") && strings.Contains(d, ":")):
				add(df, "%q: leave the port out, Envoy ignores the port of the Host", d)
			case domainOwner[strings.ToLower(d)] != "":
				add(df, "%q is already routed by %s", d, domainOwner[strings.ToLower(d)])
			default:
				domainOwner[strings.ToLower(d)] = f
			}
		}
		for j, p := range s.PathPrefixes {
			if !strings.HasPrefix(p, "/") {
				add(fmt.Sprintf("%s.path_prefixes[%d]", f, j), "%q must start with /", p)
			}
		}
		if s.Address == "" {
			add(f+".address", "is required")
		} else if _, port, err := net.SplitHostPort(s.Address); err != nil || !validPort(port) {
			add(f+".address", "%q is not host:port", s.Address)
		}
		switch s.TLS.Mode {
		case "disable", "require":
		case "verify-ca", "verify-full":
			if s.TLS.CAFile == "" {
				add(f+".tls.ca_file", "is required by mode %s: Envoy verifies the upstream against it", s.TLS.Mode)
			}
		default:
			add(f+".tls.mode", "must be disable, require, verify-ca or verify-full, not %q", s.TLS.Mode)
		}
		for k := range s.Labels {
			if k == "" {
				add(f+".labels", "a label needs a name")
			}
		}
		p := s.Processing
		for _, m := range []struct{ field, v string }{{"request_headers", p.RequestHeaders}, {"response_headers", p.ResponseHeaders}} {
			if m.v != ProcessSend && m.v != ProcessSkip {
				add(f+".processing."+m.field, "must be send or skip, not %q", m.v)
			}
		}
		for _, m := range []struct{ field, v string }{{"request_body", p.RequestBody}, {"response_body", p.ResponseBody}} {
			switch m.v {
			case ProcessNone, ProcessStreamed, ProcessBuffered, ProcessBufferedPartial:
			default:
				add(f+".processing."+m.field, "must be none, streamed, buffered or buffered_partial, not %q", m.v)
			}
		}
		if p.RequestHeaders == ProcessSkip {
			add(f+".processing.request_headers", "must be send: custos verifies the authorization decision against the request headers and parks writes on them")
		}
		if p.ResponseBody != ProcessNone && p.ResponseHeaders == ProcessSkip {
			add(f+".processing.response_headers", "must be send when response_body is %s: masking needs the content type and encoding", p.ResponseBody)
		}
	}
	return errs
}

func (c *Config) validateXDS() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	x := c.XDS
	seen := map[string]bool{}
	for i, id := range x.NodeIDs {
		f := fmt.Sprintf("xds.node_ids[%d]", i)
		if id == "" {
			add(f, "must not be empty")
		} else if seen[id] {
			add(f, "%q is listed twice", id)
		}
		seen[id] = true
	}
	if x.Enabled() && c.Listeners.GRPC.Address == "" {
		add("xds.node_ids", "need listeners.grpc.address: xDS is served on the gRPC listener")
	}
	for _, a := range []struct{ field, v string }{{"xds.grpc_address", x.GRPCAddress}, {"xds.pgfilter_address", x.PgfilterAddress}} {
		if a.v == "" {
			if x.Enabled() {
				add(a.field, "is required")
			}
			continue
		}
		_, port, err := net.SplitHostPort(a.v)
		switch {
		case err != nil || !validPort(port):
			add(a.field, "%q is not host:port", a.v)
		case port == "0" && x.Enabled():
			add(a.field, "%q: Envoy needs the port the listener is bound to, not 0", a.v)
		}
	}
	if net.ParseIP(x.ListenHost) == nil {
		add("xds.listen_host", "%q is not an IP address", x.ListenHost)
	}
	if x.HTTPPort < 1 || x.HTTPPort > 65535 {
		add("xds.http_port", "%d is not a port", x.HTTPPort)
	}
	if (x.HTTPTLS.CertFile == "") != (x.HTTPTLS.KeyFile == "") {
		add("xds.http_tls", "cert_file and key_file go together")
	}
	errs = append(errs, c.validateXDSGRPCTLS()...)
	portOwner := map[int]string{}
	if len(c.HTTPServices) > 0 {
		portOwner[x.HTTPPort] = "xds.http_port"
	}
	pgNames := map[string]bool{}
	for _, r := range c.Resources {
		if r.Type != "postgres" {
			continue
		}
		pgNames[r.Name] = true
		port, ok := x.PostgresPorts[r.Name]
		f := "xds.postgres_ports." + r.Name
		switch {
		case !ok:
			if x.Enabled() {
				add("xds.postgres_ports", "resource %q has no port", r.Name)
			}
		case port < 1 || port > 65535:
			add(f, "%d is not a port", port)
		case portOwner[port] != "":
			add(f, "port %d is already used by %s", port, portOwner[port])
		default:
			portOwner[port] = f
		}
	}
	names := make([]string, 0, len(x.PostgresPorts))
	for name := range x.PostgresPorts {
		if !pgNames[name] {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		add("xds.postgres_ports."+name, "no postgres resource has this name")
	}
	return errs
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
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
