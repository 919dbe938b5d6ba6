// Package envoy holds custos' Envoy configuration files and the loader that
// checks them: [LoadBootstrap] reads a YAML or JSON bootstrap strictly with
// protojson (an unknown or misspelled field, a value of the wrong type or a
// typed config of an unknown type fails) and runs the protos' validation,
// typed configs included. Every Envoy v3 config and extension type,
// contrib included, is registered by this package (registry.go), so any
// typed config an Envoy file names resolves.
package envoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/custos-dev/custos/xds"
)

// LoadBootstrap reads an Envoy YAML (or JSON) bootstrap strictly and
// validates it.
func LoadBootstrap(data []byte) (*bootstrapv3.Bootstrap, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("yaml: a bootstrap is one document")
	}
	plain, err := jsonable(doc)
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(plain)
	if err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
		return nil, fmt.Errorf("protojson: %w", err)
	}
	if err := xds.Validate(&b); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return &b, nil
}

// LoadBootstrapFile is LoadBootstrap of the file at path.
func LoadBootstrapFile(path string) (*bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, err := LoadBootstrap(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// jsonable turns what YAML decodes into what encoding/json can write.
func jsonable(v any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			t[k] = j
		}
		return t, nil
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			ks, ok := k.(string)
			if !ok {
				ks = fmt.Sprint(k)
			}
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			m[ks] = j
		}
		return m, nil
	case []any:
		for i, e := range t {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			t[i] = j
		}
		return t, nil
	}
	return v, nil
}
