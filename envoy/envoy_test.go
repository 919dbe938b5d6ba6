// Package envoy_test checks every Envoy configuration file under envoy/:
// each loads into a Bootstrap with protojson (an unknown or misspelled
// field, a value of the wrong type or a typed config of an unknown type
// fails), and passes the protos' validation, typed configs included.
package envoy_test

import (
	"flag"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/custos-dev/custos/envoy"
	"github.com/custos-dev/custos/xds"
)

var update = flag.Bool("update", false, "rewrite registry.go from the go-control-plane modules in go.mod")

// loadBootstrap is the loader every Envoy file passes (package envoy).
var loadBootstrap = envoy.LoadBootstrap

// configFiles are the Envoy files under this directory (testdata aside).
func configFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != "." {
			return filepath.SkipDir
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml", ".json":
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestEnvoyConfigs(t *testing.T) {
	t.Parallel()
	files := configFiles(t)
	if !slices.Contains(files, "bootstrap-ads.yaml") {
		t.Fatalf("bootstrap-ads.yaml not found among %v", files)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := loadBootstrap(data); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		})
	}
}

// TestBootstrapADS checks what custos relies on in bootstrap-ads.yaml:
// the node id of `custos dev` and everything dynamic over ADS to custos'
// gRPC listener.
func TestBootstrapADS(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("bootstrap-ads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadBootstrap(data)
	if err != nil {
		t.Fatal(err)
	}
	if b.GetNode().GetId() != "custos-dev" {
		t.Errorf("node id = %q", b.GetNode().GetId())
	}
	dr := b.GetDynamicResources()
	if dr.GetLdsConfig().GetAds() == nil || dr.GetCdsConfig().GetAds() == nil {
		t.Errorf("lds/cds not over ADS: %v", dr)
	}
	gs := dr.GetAdsConfig().GetGrpcServices()
	if len(gs) != 1 {
		t.Fatalf("ads grpc services = %v", gs)
	}
	name := gs[0].GetEnvoyGrpc().GetClusterName()
	var found bool
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != name {
			continue
		}
		found = true
		if c.GetName() == xds.ClusterGRPC || c.GetName() == xds.ClusterPgfilter {
			t.Errorf("static cluster %s collides with a cluster custos serves", c.GetName())
		}
		if c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] == nil {
			t.Errorf("cluster %s: no HTTP/2 protocol options (gRPC needs HTTP/2)", name)
		}
		sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if got := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()); got != "127.0.0.1:9901" {
			t.Errorf("ADS cluster address = %s, want custos dev's gRPC listener 127.0.0.1:9901", got)
		}
	}
	if !found {
		t.Errorf("ADS cluster %q is not a static cluster", name)
	}
}

// TestLoadRefuses shows that the check catches what Envoy would refuse.
func TestLoadRefuses(t *testing.T) {
	t.Parallel()
	const good = `
node: {id: n, cluster: c}
static_resources:
  clusters:
    - name: up
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: up
        endpoints:
          - lb_endpoints:
              - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 80}}}
  listeners:
    - name: l
      address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.tcp_proxy
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                stat_prefix: t
                cluster: up
            - name: envoy.filters.network.postgres_proxy
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.postgres_proxy.v3alpha.PostgresProxy
                stat_prefix: pg
`
	if _, err := loadBootstrap([]byte(good)); err != nil {
		t.Fatalf("the good config fails: %v", err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"misspelled field", "connect_timeout: 1s", "conect_timeout: 1s", `unknown field "conect_timeout"`},
		{"misspelled typed config field", "stat_prefix: t", "stat_prefx: t", `unknown field "stat_prefx"`},
		{"wrong type", "port_value: 80", "port_value: eighty", "invalid value for uint32 field portValue"},
		{"duration not a duration", "connect_timeout: 1s", "connect_timeout: 1 minute", "Duration"},
		{"unknown typed config type", "tcp_proxy.v3.TcpProxy", "tcp_proxy.v3.TcpProxi", "TcpProxi"},
		{"rule broken in a typed config", "stat_prefix: t", "stat_prefix: ''", "StatPrefix"},
		{"rule broken in a contrib typed config", "stat_prefix: pg", "stat_prefix: ''", "PostgresProxy"},
		{"rule broken in the bootstrap", "port_value: 10000", "port_value: 70000", "PortValue"},
		{"two documents", "node: {id: n, cluster: c}", "node: {id: n, cluster: c}\n---\nnode: {}", "one document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bad := strings.Replace(good, tt.old, tt.new, 1)
			if bad == good {
				t.Fatalf("%q not in the good config", tt.old)
			}
			_, err := loadBootstrap([]byte(bad))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// registryModules are the modules whose Envoy types registry.go
// registers (so that any typed config an Envoy file names resolves), with
// the folders that hold them.
var registryModules = []struct{ module, dir string }{
	{"github.com/envoyproxy/go-control-plane/envoy", "config"},
	{"github.com/envoyproxy/go-control-plane/envoy", "extensions"},
	{"github.com/envoyproxy/go-control-plane/contrib", "envoy"},
}

// legacyAPI matches packages of retired API versions Envoy no longer reads.
var legacyAPI = regexp.MustCompile(`/v[12](alpha\d*)?$`)

// TestRegistryComplete keeps registry.go importing every package of
// Envoy's v3 config and extension types (contrib included) of the
// go-control-plane versions in go.mod; -update rewrites it.
func TestRegistryComplete(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to find the module sources")
	}
	var want []string
	for _, m := range registryModules {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", m.module).Output()
		if err != nil {
			t.Fatalf("go list -m %s: %v", m.module, err)
		}
		dir := strings.TrimSpace(string(out))
		if dir == "" {
			t.Skipf("module %s is not downloaded", m.module)
		}
		root := filepath.Join(dir, m.dir)
		base := m.module + "/" + m.dir
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".pb.go") {
				return err
			}
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			pkg := base + "/" + filepath.ToSlash(rel)
			if !legacyAPI.MatchString(pkg) && !slices.Contains(want, pkg) {
				want = append(want, pkg)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(want)
	if *update {
		var b strings.Builder
		b.WriteString("// Code generated by `go test ./envoy -run TestRegistryComplete -update`. DO NOT EDIT.\n\n")
		b.WriteString("package envoy\n\n// Every Envoy v3 config and extension type, contrib included, so that any\n// typed config an Envoy file names resolves.\nimport (\n")
		for _, p := range want {
			b.WriteString("\t_ " + strconv.Quote(p) + "\n")
		}
		b.WriteString(")\n")
		if err := os.WriteFile("registry.go", []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := parser.ParseFile(token.NewFileSet(), "registry.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		have = append(have, p)
	}
	slices.Sort(have)
	if !slices.Equal(have, want) {
		var missing, extra []string
		for _, p := range want {
			if !slices.Contains(have, p) {
				missing = append(missing, p)
			}
		}
		for _, p := range have {
			if !slices.Contains(want, p) {
				extra = append(extra, p)
			}
		}
		t.Errorf("registry.go is out of date (missing %v, extra %v): run go test ./envoy -run TestRegistryComplete -update", missing, extra)
	}
}
