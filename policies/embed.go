// Package policies holds custos' default policy: Rego modules, their data and
// their tests (opa test). FS is the copy built into the binary, which
// internal/policy loads when no policy directory is configured. README.md
// documents the policy input and the decision.
package policies

import "embed"

// FS holds the default policy's .rego and .json files, tests included (the
// loader skips *_test.rego).
//
//go:embed *.rego *.json
var FS embed.FS
