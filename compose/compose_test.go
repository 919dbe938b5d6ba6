package compose_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"go.yaml.in/yaml/v3"

	"github.com/custos-dev/custos/envoy"
	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/envoyctx"
	"github.com/custos-dev/custos/xds"
)

// The parts of the compose file format the stack uses; decoding is
// strict, so a misspelled key fails.
type composeFile struct {
	Name       string              `yaml:"name"`
	Services   map[string]*service `yaml:"services"`
	Networks   map[string]network  `yaml:"networks"`
	Volumes    map[string]any      `yaml:"volumes"`
	Extensions map[string]any      `yaml:",inline"`
}

type service struct {
	Image       string                 `yaml:"image"`
	Build       *build                 `yaml:"build"`
	Command     []string               `yaml:"command"`
	DependsOn   map[string]dependency  `yaml:"depends_on"`
	Environment map[string]string      `yaml:"environment"`
	Volumes     []string               `yaml:"volumes"`
	Ports       []string               `yaml:"ports"`
	Healthcheck *healthcheck           `yaml:"healthcheck"`
	Networks    map[string]*serviceNet `yaml:"networks"`
}

type build struct {
	Context string `yaml:"context"`
	Target  string `yaml:"target"`
}

type dependency struct {
	Condition string `yaml:"condition"`
}

type healthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
	Disable     bool     `yaml:"disable"`
}

type serviceNet struct {
	IPv4Address string `yaml:"ipv4_address"`
}

type network struct {
	IPAM struct {
		Config []struct {
			Subnet string `yaml:"subnet"`
		} `yaml:"config"`
	} `yaml:"ipam"`
}

// mount is one entry of a service's volumes: a file or directory of the
// repository (bind) or a named volume.
type mount struct {
	source, target string
	bind, readOnly bool
}

func (s *service) mounts() []mount {
	var ms []mount
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		m := mount{source: parts[0], target: parts[1]}
		m.bind = strings.HasPrefix(m.source, ".") || strings.HasPrefix(m.source, "/")
		m.readOnly = len(parts) > 2 && parts[2] == "ro"
		ms = append(ms, m)
	}
	return ms
}

// mountOf is the repository file (relative to compose/) mounted at target.
func (s *service) mountOf(t *testing.T, target string) string {
	t.Helper()
	for _, m := range s.mounts() {
		if m.target == target && m.bind {
			return m.source
		}
	}
	t.Fatalf("nothing of the repository is mounted at %s", target)
	return ""
}

// flagValue is the value after name in a command line.
func flagValue(cmd []string, name string) string {
	for i, a := range cmd {
		if a == name && i+1 < len(cmd) {
			return cmd[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func loadCompose(t *testing.T) *composeFile {
	t.Helper()
	f, err := os.Open("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	var c composeFile
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for k := range c.Extensions {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("compose.yaml: unknown top-level key %q", k)
		}
	}
	if len(c.Services) == 0 {
		t.Fatal("compose.yaml: no services")
	}
	return &c
}

// The services the stack is made of, by the names Envoy's and custos'
// configurations use as host names.
var wantServices = []string{"stackinit", "postgres", "issuer", "custos", "envoy", "upstream-api", "otel-collector", "jaeger"}

func TestServices(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	for _, name := range wantServices {
		if c.Services[name] == nil {
			t.Errorf("no service %s", name)
		}
	}
	stages := dockerStages(t)
	for name, s := range c.Services {
		t.Run(name, func(t *testing.T) {
			switch {
			case s.Build != nil:
				// Built here: the image name is local, the target a stage.
				if s.Build.Context != ".." {
					t.Errorf("build context %q, want the repository (..)", s.Build.Context)
				}
				if !slices.ContainsFunc(stages, func(st stage) bool { return st.name == s.Build.Target }) {
					t.Errorf("build target %q is not a stage of the Dockerfile", s.Build.Target)
				}
				if s.Image == "" || strings.Contains(s.Image, "/") {
					t.Errorf("built image %q should have a local name", s.Image)
				}
			default:
				if err := pinned(s.Image); err != nil {
					t.Error(err)
				}
			}
			for _, p := range s.Ports {
				if !strings.HasPrefix(p, "127.0.0.1:") {
					t.Errorf("port %s is published beyond the host's loopback", p)
				}
			}
		})
	}
}

// pinned: an image with a concrete version tag (or a digest).
func pinned(image string) error {
	if strings.Contains(image, "@sha256:") {
		return nil
	}
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return fmt.Errorf("image %q has no tag", image)
	}
	tag := image[i+1:]
	if tag == "latest" || strings.HasSuffix(tag, "-latest") || strings.HasPrefix(tag, "latest-") {
		return fmt.Errorf("image %q: %q is not a pinned tag", image, tag)
	}
	if !strings.ContainsAny(tag, "0123456789") {
		return fmt.Errorf("image %q: tag %q names no version", image, tag)
	}
	return nil
}

func TestPinnedRefuses(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"postgres", "postgres:latest", "envoyproxy/envoy-contrib:v1.37-latest", "jaegertracing/jaeger:dev", "localhost:5000/jaeger"} {
		if pinned(bad) == nil {
			t.Errorf("%s counts as pinned", bad)
		}
	}
	for _, good := range []string{"postgres:17.6-bookworm", "envoyproxy/envoy-contrib:v1.37.2", "localhost:5000/x:1.2", "x@sha256:abc"} {
		if err := pinned(good); err != nil {
			t.Error(err)
		}
	}
}

// TestHealthAndOrder: every long-running service has a healthcheck, every
// dependency waits on a condition (healthy, or a one-shot's success), and
// the order has no cycle.
func TestHealthAndOrder(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	oneShot := map[string]bool{}
	for _, s := range c.Services {
		for dep, d := range s.DependsOn {
			if d.Condition == "service_completed_successfully" {
				oneShot[dep] = true
			}
		}
	}
	for name, s := range c.Services {
		hc := s.Healthcheck
		switch {
		case oneShot[name]:
			if hc != nil {
				t.Errorf("%s: a one-shot service needs no healthcheck", name)
			}
		case hc == nil || hc.Disable || len(hc.Test) < 2:
			t.Errorf("%s: no healthcheck", name)
		case hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL":
			t.Errorf("%s: healthcheck test %v starts with neither CMD nor CMD-SHELL", name, hc.Test)
		case hc.Interval == "" || hc.Timeout == "" || hc.Retries == 0:
			t.Errorf("%s: healthcheck without interval, timeout and retries", name)
		}
		for dep, d := range s.DependsOn {
			ds := c.Services[dep]
			switch {
			case ds == nil:
				t.Errorf("%s depends on %s, which is no service", name, dep)
			case oneShot[dep] && d.Condition != "service_completed_successfully":
				t.Errorf("%s: depends on the one-shot %s with condition %q", name, dep, d.Condition)
			case !oneShot[dep] && d.Condition != "service_healthy":
				t.Errorf("%s: depends on %s with condition %q, want service_healthy", name, dep, d.Condition)
			}
		}
	}
	// No cycles.
	state := map[string]int{}
	var visit func(string, []string)
	visit = func(n string, path []string) {
		switch state[n] {
		case 1:
			t.Errorf("depends_on cycle: %v", append(path, n))
			return
		case 2:
			return
		}
		state[n] = 1
		for dep := range c.Services[n].DependsOn {
			if c.Services[dep] != nil {
				visit(dep, append(path, n))
			}
		}
		state[n] = 2
	}
	for n := range c.Services {
		visit(n, nil)
	}
	// A healthcheck through the probe needs the probe volume.
	for name, s := range c.Services {
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || !strings.HasPrefix(s.Healthcheck.Test[1], "/stack/probe/") {
			continue
		}
		if !slices.ContainsFunc(s.mounts(), func(m mount) bool { return m.source == "probe" && m.target == "/stack/probe" }) {
			t.Errorf("%s: its healthcheck runs the probe, but the probe volume is not mounted at /stack/probe", name)
		}
		if d, ok := s.DependsOn["stackinit"]; !ok || d.Condition != "service_completed_successfully" {
			t.Errorf("%s: its healthcheck runs the probe, but it does not wait for stackinit to install it", name)
		}
	}
}

// TestMounts: every file mounted from the repository exists, every named
// volume is declared, configuration is mounted read-only.
func TestMounts(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	for name, s := range c.Services {
		for _, m := range s.mounts() {
			if !m.bind {
				if _, ok := c.Volumes[m.source]; !ok {
					t.Errorf("%s: volume %q is not declared", name, m.source)
				}
				continue
			}
			if !strings.HasPrefix(m.source, "./") && !strings.HasPrefix(m.source, "../") {
				t.Errorf("%s: %s is not a path of the repository", name, m.source)
				continue
			}
			fi, err := os.Stat(m.source)
			if err != nil {
				t.Errorf("%s: mounts %s: %v", name, m.source, err)
				continue
			}
			if !fi.Mode().IsRegular() {
				t.Errorf("%s: %s is not a file", name, m.source)
			}
			if !m.readOnly {
				t.Errorf("%s: %s is mounted writable", name, m.source)
			}
		}
	}
}

// TestEnvoyConfig: the Envoy file compose mounts passes the loader of
// envoy/ (protojson, strict, every typed config resolved and validated),
// is the one Envoy is started with, and names compose services.
func TestEnvoyConfig(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	s := c.Services["envoy"]
	target := flagValue(s.Command, "-c")
	src := s.mountOf(t, target)
	if filepath.Clean(src) != filepath.Join("..", "envoy", "envoy.yaml") {
		t.Errorf("envoy runs %s, not envoy/envoy.yaml", src)
	}
	b, err := envoy.LoadBootstrapFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range b.GetStaticResources().GetClusters() {
		for _, le := range cl.GetLoadAssignment().GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				if c.Services[sa.GetAddress()] == nil {
					t.Errorf("cluster %s: %s is not a compose service", cl.GetName(), sa.GetAddress())
				}
			}
		}
	}
	// The published ports reach Envoy's listeners.
	var ports []string
	for _, l := range b.GetStaticResources().GetListeners() {
		ports = append(ports, strconv.Itoa(int(l.GetAddress().GetSocketAddress().GetPortValue())))
	}
	for _, p := range s.Ports {
		inner := p[strings.LastIndex(p, ":")+1:]
		if !slices.Contains(ports, inner) {
			t.Errorf("port %s: Envoy has no listener on %s (%v)", p, inner, ports)
		}
	}
	if hc := s.Healthcheck.Test; !strings.Contains(strings.Join(hc, " "), fmt.Sprintf(":%d/", b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue())) {
		t.Errorf("envoy's healthcheck %v does not ask its admin port", hc)
	}
}

// TestCustosConfig: custos.yaml loads with internal/config (defaults,
// validation) and agrees with the stack: the issuer's address, the
// database service, the secrets volume, the ports Envoy calls, and the
// HTTP service Envoy routes.
func TestCustosConfig(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	s := c.Services["custos"]
	target := flagValue(s.Command, "--config")
	cfg, err := config.Load(s.mountOf(t, target))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.XDS.Enabled() {
		t.Errorf("xds.node_ids set: this stack's Envoy is static")
	}

	// The issuer: custos dev on its fixed address.
	iss := c.Services["issuer"]
	listen := flagValue(iss.Command, "--admin-listen")
	ip, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("issuer --admin-listen %q: %v", listen, err)
	}
	if iss.Networks["default"] == nil || iss.Networks["default"].IPv4Address != ip {
		t.Errorf("issuer listens on %s but its fixed address is %v", ip, iss.Networks["default"])
	}
	_, subnet, err := net.ParseCIDR(c.Networks["default"].IPAM.Config[0].Subnet)
	if err != nil || !subnet.Contains(net.ParseIP(ip)) {
		t.Errorf("issuer address %s outside the network's subnet (%v)", ip, err)
	}
	wantIssuer := "http://" + net.JoinHostPort(ip, port) + "/dev-oidc"
	if len(cfg.OIDC.Issuers) != 1 || cfg.OIDC.Issuers[0].URL != wantIssuer {
		t.Errorf("oidc.issuers = %+v, want the issuer service %s", cfg.OIDC.Issuers, wantIssuer)
	}
	if hc := iss.Healthcheck.Test; hc[len(hc)-1] != wantIssuer+"/.well-known/openid-configuration" {
		t.Errorf("issuer healthcheck %v does not ask the discovery document of %s", hc, wantIssuer)
	}

	// Files custos reads are in the secrets volume it mounts.
	var secretsAt string
	for _, m := range s.mounts() {
		if m.source == "secrets" {
			secretsAt = m.target
		}
	}
	r := cfg.Resources[0]
	for field, f := range map[string]string{
		"listeners.postgres.tls.cert_file": cfg.Listeners.Postgres.TLS.CertFile,
		"listeners.postgres.tls.key_file":  cfg.Listeners.Postgres.TLS.KeyFile,
		"resources[0].password.file":       r.Password.File,
		"resources[0].tls.ca_file":         r.TLS.CAFile,
	} {
		if secretsAt == "" || !strings.HasPrefix(f, secretsAt+"/") {
			t.Errorf("%s = %q is not in the secrets volume (mounted at %q)", field, f, secretsAt)
		}
	}
	host, _, _ := net.SplitHostPort(r.Address)
	if c.Services[host] == nil || r.TLS.ServerName != host {
		t.Errorf("resource %s: address %s, server_name %s: want the postgres service", r.Name, r.Address, r.TLS.ServerName)
	}
	if db := c.Services["postgres"].Environment["POSTGRES_DB"]; db != r.Database {
		t.Errorf("resource database %q, postgres creates %q", r.Database, db)
	}

	// The ports Envoy's clusters call.
	b, err := envoy.LoadBootstrapFile(filepath.Join("..", "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	clusterAddr := map[string]string{}
	for _, cl := range b.GetStaticResources().GetClusters() {
		sa := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		clusterAddr[cl.GetName()] = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
	}
	for cluster, listener := range map[string]string{xds.ClusterGRPC: cfg.Listeners.GRPC.Address, xds.ClusterPgfilter: cfg.Listeners.Postgres.Address} {
		_, lp, _ := net.SplitHostPort(listener)
		if want := net.JoinHostPort("custos", lp); clusterAddr[cluster] != want {
			t.Errorf("Envoy cluster %s calls %s, custos listens on %s", cluster, clusterAddr[cluster], listener)
		}
	}
	// Envoy sends the PROXY protocol to pgfilter, from the stack's network.
	pl := cfg.Listeners.Postgres
	trusted, err := pl.TrustedProxyPrefixes()
	if pl.ProxyProtocol != config.ProxyProtocolRequired || pl.PasswordTransport != config.TransportTLS || err != nil || len(trusted) == 0 {
		t.Errorf("pgfilter listener: proxy_protocol %q, password_transport %q, trusted %v (%v): want required, tls and Envoy's network", pl.ProxyProtocol, pl.PasswordTransport, trusted, err)
	}
	for _, p := range trusted {
		if !subnet.Contains(p.Addr().AsSlice()) {
			t.Errorf("trusted proxy %s is outside the stack's network %s", p, subnet)
		}
	}
	routes := envoyRoutes(t, b)
	for _, hs := range cfg.HTTPServices {
		rt, ok := routes[xds.ServiceClusterPrefix+hs.Name]
		switch {
		case !ok:
			t.Errorf("http service %s: no Envoy route to cluster %s", hs.Name, xds.ServiceClusterPrefix+hs.Name)
		default:
			want := map[string]string{envoyctx.ContextResource: hs.Name, envoyctx.ContextResourceType: envoyctx.TypeHTTP}
			for k, v := range hs.Labels {
				want[envoyctx.ContextLabelPrefix+k] = v
			}
			if !maps.Equal(rt.ext, want) {
				t.Errorf("http service %s: Envoy's context_extensions %v, want %v", hs.Name, rt.ext, want)
			}
			p := hs.Processing
			got := []string{rt.mode.GetRequestHeaderMode().String(), rt.mode.GetResponseHeaderMode().String(), rt.mode.GetRequestBodyMode().String(), rt.mode.GetResponseBodyMode().String()}
			if wantMode := []string{p.RequestHeaders, p.ResponseHeaders, p.RequestBody, p.ResponseBody}; !slices.EqualFunc(got, wantMode, strings.EqualFold) {
				t.Errorf("http service %s: Envoy's processing mode %v, custos.yaml %v", hs.Name, got, wantMode)
			}
		}
		if got := clusterAddr[xds.ServiceClusterPrefix+hs.Name]; got != hs.Address {
			t.Errorf("http service %s at %s, Envoy's cluster at %q", hs.Name, hs.Address, got)
		}
		h, _, _ := net.SplitHostPort(hs.Address)
		if c.Services[h] == nil {
			t.Errorf("http service %s: %s is not a compose service", hs.Name, h)
		}
	}

	// The admin port the healthcheck and the host use.
	_, ap, _ := net.SplitHostPort(cfg.Listeners.Admin.Address)
	if !strings.Contains(strings.Join(s.Healthcheck.Test, " "), ":"+ap+"/readyz") {
		t.Errorf("custos healthcheck %v does not ask /readyz on the admin port %s", s.Healthcheck.Test, ap)
	}
	if u, err := url.Parse(cfg.Approvals.PublicURL); err != nil || u.Port() != ap {
		t.Errorf("approvals.public_url %q is not the published admin port %s", cfg.Approvals.PublicURL, ap)
	}
	// OTLP goes to the collector service.
	u, err := url.Parse(s.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
	if err != nil || c.Services[u.Hostname()] == nil {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q is not a compose service", s.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
	}
}

type envoyRoute struct {
	ext  map[string]string
	mode *extprocv3.ProcessingMode
}

// envoyRoutes are the HTTP routes of an Envoy bootstrap by cluster, with
// what they tell ext_authz and ext_proc.
func envoyRoutes(t *testing.T, b *bootstrapv3.Bootstrap) map[string]envoyRoute {
	t.Helper()
	routes := map[string]envoyRoute{}
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
					for _, r := range vh.GetRoutes() {
						var authz extauthzv3.ExtAuthzPerRoute
						var proc extprocv3.ExtProcPerRoute
						if err := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"].UnmarshalTo(&authz); err != nil {
							t.Fatalf("route %s: %v", r.GetName(), err)
						}
						if err := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_proc"].UnmarshalTo(&proc); err != nil {
							t.Fatalf("route %s: %v", r.GetName(), err)
						}
						routes[r.GetRoute().GetCluster()] = envoyRoute{
							ext:  authz.GetCheckSettings().GetContextExtensions(),
							mode: proc.GetOverrides().GetProcessingMode(),
						}
					}
				}
			}
		}
	}
	return routes
}

// collectorConfig is the part of the collector's config this stack relies on.
type collectorConfig struct {
	Extensions map[string]map[string]any `yaml:"extensions"`
	Receivers  map[string]map[string]any `yaml:"receivers"`
	Processors map[string]map[string]any `yaml:"processors"`
	Exporters  map[string]map[string]any `yaml:"exporters"`
	Service    struct {
		Extensions []string `yaml:"extensions"`
		Pipelines  map[string]struct {
			Receivers  []string `yaml:"receivers"`
			Processors []string `yaml:"processors"`
			Exporters  []string `yaml:"exporters"`
		} `yaml:"pipelines"`
	} `yaml:"service"`
}

// componentType is the type of a component id: "file" of "file/audit".
func componentType(id string) string {
	t, _, _ := strings.Cut(id, "/")
	return t
}

// TestCollectorConfig: the collector config parses, every component a
// pipeline names is defined, logs go to a file in the audit volume and
// traces to Jaeger, and the health_check extension answers the
// healthcheck.
func TestCollectorConfig(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	s := c.Services["otel-collector"]
	data, err := os.ReadFile(s.mountOf(t, flagValue(s.Command, "--config")))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	var cc collectorConfig
	if err := dec.Decode(&cc); err != nil {
		t.Fatalf("collector config: %v", err)
	}
	// Component types of the contrib distribution this stack uses.
	known := map[string][]string{
		"receiver":  {"otlp"},
		"processor": {"batch"},
		"exporter":  {"file", "otlp", "otlp_grpc"},
		"extension": {"health_check"},
	}
	for kind, defs := range map[string]map[string]map[string]any{"receiver": cc.Receivers, "processor": cc.Processors, "exporter": cc.Exporters, "extension": cc.Extensions} {
		for id := range defs {
			if !slices.Contains(known[kind], componentType(id)) {
				t.Errorf("%s %q: unknown type", kind, id)
			}
		}
	}
	for _, e := range cc.Service.Extensions {
		if _, ok := cc.Extensions[e]; !ok {
			t.Errorf("service.extensions: %q is not defined", e)
		}
	}
	for name, p := range cc.Service.Pipelines {
		if len(p.Receivers) == 0 || len(p.Exporters) == 0 {
			t.Errorf("pipeline %s needs receivers and exporters", name)
		}
		for _, ref := range []struct {
			ids  []string
			defs map[string]map[string]any
		}{{p.Receivers, cc.Receivers}, {p.Processors, cc.Processors}, {p.Exporters, cc.Exporters}} {
			for _, id := range ref.ids {
				if _, ok := ref.defs[id]; !ok {
					t.Errorf("pipeline %s: %q is not defined", name, id)
				}
			}
		}
	}
	// Logs (custos' audit records) land in a file in the audit volume.
	logs, ok := cc.Service.Pipelines["logs"]
	if !ok {
		t.Fatal("no logs pipeline")
	}
	var auditAt string
	for _, m := range s.mounts() {
		if m.source == "audit" {
			auditAt = m.target
		}
	}
	var fileExporter bool
	for _, id := range logs.Exporters {
		if componentType(id) != "file" {
			continue
		}
		fileExporter = true
		p, _ := cc.Exporters[id]["path"].(string)
		if auditAt == "" || path.Dir(p) != auditAt {
			t.Errorf("exporter %s writes %q, not into the audit volume (mounted at %q)", id, p, auditAt)
		}
	}
	if !fileExporter {
		t.Errorf("the logs pipeline has no file exporter: %v", logs.Exporters)
	}
	// Traces go to Jaeger.
	traces, ok := cc.Service.Pipelines["traces"]
	if !ok {
		t.Fatal("no traces pipeline")
	}
	var toJaeger bool
	for _, id := range traces.Exporters {
		if ep, _ := cc.Exporters[id]["endpoint"].(string); componentType(id) == "otlp" || componentType(id) == "otlp_grpc" {
			h, _, _ := net.SplitHostPort(ep)
			toJaeger = toJaeger || h == "jaeger"
		}
	}
	if !toJaeger || c.Services["jaeger"] == nil {
		t.Errorf("traces are not exported to the jaeger service: %v", traces.Exporters)
	}
	// The receivers custos and Envoy send to.
	grpcEP, _ := cc.Receivers["otlp"]["protocols"].(map[string]any)["grpc"].(map[string]any)["endpoint"].(string)
	if _, p, _ := net.SplitHostPort(grpcEP); p != "4317" {
		t.Errorf("OTLP gRPC receiver on %q, custos and Envoy send to 4317", grpcEP)
	}
	hcEP, _ := cc.Extensions["health_check"]["endpoint"].(string)
	if _, p, _ := net.SplitHostPort(hcEP); !strings.Contains(strings.Join(s.Healthcheck.Test, " "), ":"+p+"/") {
		t.Errorf("collector healthcheck %v does not ask the health_check extension on %s", s.Healthcheck.Test, hcEP)
	}
}

// TestOtherMounts: the upstream API's files and the database init script.
func TestOtherMounts(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	up := c.Services["upstream-api"]
	data, err := os.ReadFile(up.mountOf(t, "/usr/share/nginx/api/cards.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(data) {
		t.Error("cards.json is not JSON")
	}
	conf, err := os.ReadFile(up.mountOf(t, "/etc/nginx/conf.d/default.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "listen 8080;") || strings.Count(string(conf), "{") != strings.Count(string(conf), "}") {
		t.Error("default.conf: not listening on 8080, or unbalanced braces")
	}

	pg := c.Services["postgres"]
	script := pg.mountOf(t, "/docker-entrypoint-initdb.d/10-custos.sh")
	fi, err := os.Stat(script)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable (the entrypoint would source it)", script)
	}
	if bash, err := exec.LookPath("bash"); err == nil {
		if out, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", script, err, out)
		}
	}
}

// stage is one FROM of the Dockerfile.
type stage struct {
	name, base string
	lines      []string
}

func dockerStages(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []stage
	var logical strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			logical.WriteString(cont + " ")
			continue
		}
		logical.WriteString(line)
		full := logical.String()
		logical.Reset()
		fields := strings.Fields(full)
		if strings.EqualFold(fields[0], "FROM") {
			st := stage{base: fields[1]}
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				st.name = fields[3]
			} else if len(fields) != 2 {
				t.Fatalf("Dockerfile: cannot read %q", full)
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if !strings.EqualFold(fields[0], "ARG") {
				t.Fatalf("Dockerfile: %q before the first FROM", full)
			}
			continue
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, full)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// user is the USER a stage runs as ("" when it sets none).
func (s stage) user() string {
	var u string
	for _, l := range s.lines {
		if f := strings.Fields(l); strings.EqualFold(f[0], "USER") {
			u = f[1]
		}
	}
	return u
}

func rootUser(u string) bool {
	name, _, _ := strings.Cut(u, ":")
	return name == "" || name == "0" || name == "root"
}

// TestDockerfile: stages and their bases, the custos image (the default,
// last stage) static and non-root, the issuer non-root.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := dockerStages(t)
	names := map[string]stage{}
	for _, s := range stages {
		if s.name != "" {
			names[s.name] = s
		}
	}
	for _, s := range stages {
		if _, ok := names[s.base]; ok {
			continue
		}
		if err := pinnedBase(s.base); err != nil {
			t.Errorf("stage %s: %v", s.name, err)
		}
		for _, l := range s.lines {
			if from := flagValue(strings.Fields(l), "--from"); from == "" {
				for _, f := range strings.Fields(l) {
					if v, ok := strings.CutPrefix(f, "--from="); ok {
						from = v
					}
				}
				if from != "" {
					if _, ok := names[from]; !ok {
						t.Errorf("stage %s: COPY --from=%s names no stage", s.name, from)
					}
				}
			}
		}
	}
	last := stages[len(stages)-1]
	if last.name != "custos" {
		t.Errorf("the last (default) stage is %q, want custos", last.name)
	}
	if rootUser(last.user()) {
		t.Errorf("custos runs as %q, want a non-root user", last.user())
	}
	if !strings.Contains(last.base, "distroless/static") {
		t.Errorf("custos' base %s: the static binary needs no libc", last.base)
	}
	if rootUser(names["issuer"].user()) {
		t.Errorf("the issuer runs as %q, want a non-root user", names["issuer"].user())
	}
	b := strings.Join(names["build"].lines, "\n")
	for _, want := range []string{"CGO_ENABLED=1", "-extldflags -static", "netgo", "./cmd/custos"} {
		if !strings.Contains(b, want) {
			t.Errorf("build stage: no %q", want)
		}
	}
}

// pinnedBase: a base image with a digest or a tag other than latest
// (distroless publishes release channels, not versions).
func pinnedBase(image string) error {
	if strings.Contains(image, "@sha256:") {
		return nil
	}
	if strings.HasPrefix(image, "gcr.io/distroless/") {
		if i := strings.LastIndex(image, ":"); i < 0 || strings.Contains(image[i+1:], "latest") {
			return fmt.Errorf("base %s: name a channel (nonroot) or a digest", image)
		}
		return nil
	}
	return pinned(image)
}

// TestDockerignore: the build context keeps what the build reads.
func TestDockerignore(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	for _, need := range []string{"go.mod", "go.sum", "cmd/custos/main.go", "internal/config/config.go", "policies/embed.go", "compose/stackinit/main.go", "pgfilter/doc.go"} {
		for _, p := range patterns {
			p = strings.TrimPrefix(p, "**/")
			for dir := need; dir != "."; dir = path.Dir(dir) {
				if ok, _ := path.Match(p, dir); ok {
					t.Errorf(".dockerignore %q leaves out %s", p, need)
				}
			}
		}
	}
}

// TestGRPCMutualTLS: custos' gRPC listener in the stack requires mutual
// TLS, and Envoy's custos-grpc cluster presents a client certificate from
// the secrets volume Envoy mounts, trusting the CA custos verifies
// clients with, under the name custos' certificate carries.
func TestGRPCMutualTLS(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	cs := c.Services["custos"]
	cfg, err := config.Load(cs.mountOf(t, flagValue(cs.Command, "--config")))
	if err != nil {
		t.Fatal(err)
	}
	g := cfg.Listeners.GRPC
	if !g.MutualTLS() || g.TLS.ClientCAFile == "" {
		t.Fatalf("listeners.grpc = %+v: not mutual TLS", g)
	}
	// stackinit's Envoy certificate (compose/stackinit envoyClientURI).
	if !slices.Equal(g.TLS.AllowedClients, []string{"spiffe://custos.compose/envoy"}) {
		t.Errorf("allowed_clients = %v, want stackinit's Envoy identity", g.TLS.AllowedClients)
	}
	secretsAt := func(s *service) string {
		for _, m := range s.mounts() {
			if m.source == "secrets" {
				return m.target
			}
		}
		return ""
	}
	for field, f := range map[string]string{"cert_file": g.TLS.CertFile, "key_file": g.TLS.KeyFile, "client_ca_file": g.TLS.ClientCAFile} {
		if at := secretsAt(cs); at == "" || !strings.HasPrefix(f, at+"/") {
			t.Errorf("listeners.grpc.tls.%s = %q is not in custos' secrets volume", field, f)
		}
	}

	es := c.Services["envoy"]
	envoyAt := secretsAt(es)
	if envoyAt == "" {
		t.Fatal("envoy does not mount the secrets volume")
	}
	b, err := envoy.LoadBootstrapFile(filepath.Join("..", "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var up tlsv3.UpstreamTlsContext
	for _, cl := range b.GetStaticResources().GetClusters() {
		if cl.GetName() != xds.ClusterGRPC {
			continue
		}
		if err := cl.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
			t.Fatalf("custos-grpc transport socket: %v", err)
		}
	}
	common := up.GetCommonTlsContext()
	certs := common.GetTlsCertificates()
	if len(certs) != 1 {
		t.Fatalf("custos-grpc presents %d certificates", len(certs))
	}
	for what, f := range map[string]string{
		"certificate": certs[0].GetCertificateChain().GetFilename(),
		"key":         certs[0].GetPrivateKey().GetFilename(),
		"trusted CA":  common.GetValidationContext().GetTrustedCa().GetFilename(),
	} {
		if !strings.HasPrefix(f, envoyAt+"/") {
			t.Errorf("custos-grpc %s %q is not in Envoy's secrets volume (%s)", what, f, envoyAt)
		}
	}
	// The same CA file of the same volume on both sides.
	if rel := strings.TrimPrefix(common.GetValidationContext().GetTrustedCa().GetFilename(), envoyAt); rel != strings.TrimPrefix(g.TLS.ClientCAFile, secretsAt(cs)) {
		t.Errorf("Envoy trusts %s, custos verifies clients with %s", rel, g.TLS.ClientCAFile)
	}
	if up.GetSni() != "custos" {
		t.Errorf("custos-grpc sni %q, want the custos service", up.GetSni())
	}
}
