package pgfilter

import (
	"fmt"
	"slices"
	"strings"

	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/internal/sqlclass"
)

// invariantDenial is custos' own refusal of statements that would undo
// the gateway's controls whatever the policy says; nil when none applies.
// It is a denial like the policy's (with a decision id, audited) so every
// path that refuses a denied statement refuses these too.
func invariantDenial(stmts []sqlclass.Statement) *policy.Decision {
	var reasons []string
	for i := range stmts {
		reasons = appendInvariantReasons(reasons, &stmts[i], 0)
	}
	if len(reasons) == 0 {
		return nil
	}
	return &policy.Decision{ID: policy.NewDecisionID(), Allow: false, Reasons: reasons}
}

// Reasons of custos' own refusals.
const (
	reasonClientEncoding = "changing client_encoding is not allowed through custos; set it when connecting (PGCLIENTENCODING, client_encoding)"
	reasonAnySetting     = "set_config with a setting name that is not a constant is not allowed through custos (it could change client_encoding)"
	reasonPgSettings     = "writing pg_settings is not allowed through custos (it runs set_config; it could change client_encoding); use SET"
	reasonCustosSetting  = "changing %s is not allowed through custos: the custos.* settings name whom the session runs for"
	reasonRole           = "changing %s is not allowed through custos: the upstream role is custos' to choose"
)

func appendInvariantReasons(reasons []string, st *sqlclass.Statement, depth int) []string {
	if st == nil || depth > 4 {
		return reasons
	}
	add := func(r string) {
		if !slices.Contains(reasons, r) {
			reasons = append(reasons, r)
		}
	}
	// custos classifies the bytes as the session's client encoding, which
	// it pins at startup to one whose multibyte characters never hold an
	// ASCII byte; changing it would let a statement hide in a string.
	if slices.Contains(st.Settings, "client_encoding") {
		add(reasonClientEncoding)
	}
	for _, name := range st.Settings {
		switch {
		// custos.principal and its kin tell the database and its tools
		// whom the session runs for (upstream.go); a client changing them
		// could pass for someone else.
		case strings.HasPrefix(name, "custos."):
			add(fmt.Sprintf(reasonCustosSetting, name))
		// The upstream role is the group's least privilege; custos alone
		// takes an approved statement's role, and only around it
		// (approvalrole.go). A client's SET ROLE would keep it.
		case name == "role" || name == "session_authorization":
			add(fmt.Sprintf(reasonRole, name))
		}
	}
	// set_config(name, ...) with a computed name may be client_encoding.
	if slices.Contains(st.Settings, "*") {
		add(reasonAnySetting)
	}
	// UPDATE pg_settings SET setting = ... runs set_config for the rows
	// its WHERE clause picks.
	for _, t := range st.Writes {
		if t == "pg_settings" || strings.HasSuffix(t, ".pg_settings") {
			add(reasonPgSettings)
			break
		}
	}
	reasons = appendInvariantReasons(reasons, st.Explains, depth+1)
	return appendInvariantReasons(reasons, st.Prepared, depth+1)
}
