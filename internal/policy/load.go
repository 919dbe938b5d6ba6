package policy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"reflect"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
)

// Query is the query custos evaluates.
const Query = "data.custos.decision"

var decisionRef = ast.MustParseRef(Query)

// ErrInvalidPolicy: the policy sources do not load, parse or compile, or
// define no data.custos.decision.
var ErrInvalidPolicy = errors.New("invalid policy")

// source is one policy file.
type source struct {
	path string
	data []byte
}

// readSources reads the files of a policy tree as `opa test` and `opa eval
// -d` would load them: Rego modules (except *_test.rego, which only opa test
// runs) and JSON or YAML data, under the tree's directories. Names starting
// with a dot are skipped, which also skips the timestamped directories of a
// Kubernetes ConfigMap mount while reading its files through their symlinks.
func readSources(fsys fs.FS) ([]source, error) {
	var srcs []source
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || !isPolicyFile(d.Name()) {
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		srcs = append(srcs, source{path: p, data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	return srcs, nil
}

func isPolicyFile(name string) bool {
	switch path.Ext(name) {
	case ".rego":
		return !strings.HasSuffix(name, "_test.rego")
	case ".json", ".yaml", ".yml":
		return true
	}
	return false
}

// hashSources is the hex SHA-256 of the file names and contents (WalkDir
// yields them in lexical order).
func hashSources(srcs []source) string {
	h := sha256.New()
	var n [8]byte
	for _, s := range srcs {
		for _, b := range [][]byte{[]byte(s.path), s.data} {
			binary.BigEndian.PutUint64(n[:], uint64(len(b)))
			h.Write(n[:])
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// prepare parses, compiles and prepares the policy.
// It also returns what the policy reads of the input, for the decision
// cache's key.
func prepare(ctx context.Context, srcs []source) (rego.PreparedEvalQuery, inputReads, error) {
	var none rego.PreparedEvalQuery
	var noReads inputReads
	var parsed []*ast.Module
	opts := []func(*rego.Rego){rego.Query(Query), rego.StrictBuiltinErrors(true)}
	data := map[string]any{}
	modules := 0
	for _, s := range srcs {
		if path.Ext(s.path) == ".rego" {
			m, err := ast.ParseModuleWithOpts(s.path, string(s.data), ast.ParserOptions{
				RegoVersion: ast.RegoV1, ProcessAnnotation: true,
			})
			if err != nil {
				return none, noReads, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
			}
			opts = append(opts, rego.ParsedModule(m))
			parsed = append(parsed, m)
			modules++
			continue
		}
		var doc any
		if err := util.Unmarshal(s.data, &doc); err != nil {
			return none, noReads, fmt.Errorf("%w: %s: %w", ErrInvalidPolicy, s.path, err)
		}
		if err := mergeData(data, path.Dir(s.path), doc); err != nil {
			return none, noReads, fmt.Errorf("%w: %s: %w", ErrInvalidPolicy, s.path, err)
		}
	}
	if modules == 0 {
		return none, noReads, fmt.Errorf("%w: no Rego modules", ErrInvalidPolicy)
	}
	compiler := ast.NewCompiler()
	store := inmem.NewFromObjectWithOpts(data, inmem.OptReturnASTValuesOnRead(true))
	opts = append(opts, rego.Compiler(compiler), rego.Store(store))
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return none, noReads, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	if len(compiler.GetRulesExact(decisionRef)) == 0 {
		return none, noReads, fmt.Errorf("%w: no rule defines %s", ErrInvalidPolicy, Query)
	}
	return pq, analyzeReads(parsed), nil
}

// mergeData puts a data file's document under its directory's path, as the
// OPA loader does: dir/a/x.json is data.a merged with x.json's object.
func mergeData(data map[string]any, dir string, doc any) error {
	var keys []string
	if dir != "." {
		keys = strings.Split(dir, "/")
	}
	if len(keys) == 0 {
		obj, ok := doc.(map[string]any)
		if !ok {
			return errors.New("data at the root of the policy tree must be an object")
		}
		return mergeObjects(data, obj, "data")
	}
	parent := data
	for _, k := range keys[:len(keys)-1] {
		child, ok := parent[k].(map[string]any)
		if !ok {
			if _, exists := parent[k]; exists {
				return fmt.Errorf("data.%s is not an object", k)
			}
			child = map[string]any{}
			parent[k] = child
		}
		parent = child
	}
	return mergeObjects(parent, map[string]any{keys[len(keys)-1]: doc}, "data."+strings.Join(keys[:len(keys)-1], "."))
}

// mergeObjects merges src into dst; two different leaves at one path conflict.
func mergeObjects(dst, src map[string]any, at string) error {
	for k, v := range src {
		old, exists := dst[k]
		if !exists {
			dst[k] = v
			continue
		}
		oldObj, ok1 := old.(map[string]any)
		newObj, ok2 := v.(map[string]any)
		if ok1 && ok2 {
			if err := mergeObjects(oldObj, newObj, at+"."+k); err != nil {
				return err
			}
			continue
		}
		if !reflect.DeepEqual(old, v) {
			return fmt.Errorf("conflicting values for %s.%s", strings.TrimSuffix(at, "."), k)
		}
	}
	return nil
}
