package xds

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// dumpDoc is the YAML of what one Envoy node is served.
type dumpDoc struct {
	Node      string    `yaml:"node"`
	Clusters  dumpGroup `yaml:"clusters"`
	Endpoints dumpGroup `yaml:"endpoints"`
	Listeners dumpGroup `yaml:"listeners"`
	Routes    dumpGroup `yaml:"routes"`
}

// dumpGroup is one resource type: its version and its resources by name.
type dumpGroup struct {
	TypeURL   string       `yaml:"type_url"`
	Version   string       `yaml:"version"`
	Resources []*yaml.Node `yaml:"resources"`
}

// WriteYAML writes the snapshot served to each node id as YAML, one
// document per node: the resources grouped by type (clusters, endpoints,
// listeners, routes), each type with its version, each resource in
// Envoy's field names (as protojson writes them) in name order.
func WriteYAML(w io.Writer, nodeIDs []string, snap *cachev3.Snapshot) error {
	var groups [4]dumpGroup
	for i, typ := range TypeOrder {
		g, err := dumpType(snap, typ)
		if err != nil {
			return err
		}
		groups[i] = g
	}
	var buf bytes.Buffer
	for i, id := range nodeIDs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		doc := dumpDoc{Node: id, Clusters: groups[0], Endpoints: groups[1], Listeners: groups[2], Routes: groups[3]}
		if err := enc.Encode(doc); err != nil {
			return fmt.Errorf("xds: yaml: %w", err)
		}
		if err := enc.Close(); err != nil {
			return fmt.Errorf("xds: yaml: %w", err)
		}
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func dumpType(snap *cachev3.Snapshot, typ resourcev3.Type) (dumpGroup, error) {
	g := dumpGroup{TypeURL: typ, Version: snap.GetVersion(typ), Resources: []*yaml.Node{}}
	res := snap.GetResources(typ)
	for _, name := range slices.Sorted(maps.Keys(res)) {
		v, err := toNode(res[name])
		if err != nil {
			return g, fmt.Errorf("xds: %s %s: %w", shortType(typ), name, err)
		}
		g.Resources = append(g.Resources, v)
	}
	return g, nil
}

// toNode turns a message into YAML through protojson, so the YAML has
// Envoy's field names in the protos' order and typed configs with their
// @type.
func toNode(m proto.Message) (*yaml.Node, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	// JSON is YAML: decoding it into a node keeps the order of the fields.
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, fmt.Errorf("unexpected protojson output")
	}
	n := doc.Content[0]
	blockStyle(n)
	return n, nil
}

// blockStyle drops the JSON styles (flow collections, double quotes), so
// the YAML is written in block style with quotes only where needed.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}
