package pgfilter

import (
	"context"
	"errors"
	"sort"
	"strings"

	"github.com/custos-dev/custos/internal/policy"
)

// errStartupOption is a startup option custos does not pass on: only
// settings (-c name=value, --name=value) are options a client may give.
var errStartupOption = errors.New("only -c name=value and --name=value settings are allowed in startup options")

// parseStartupOptions splits the startup parameter `options` as the server
// does (pg_split_opts: whitespace separates words, a backslash takes the
// next character literally) and returns the settings it holds, in order,
// by their lower-case names. The server also reads command-line switches
// there (-B, -F, -o, …): custos refuses every word that is not a setting,
// so nothing reaches the server that custos did not decide.
func parseStartupOptions(s string) ([]param, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	var out []param
	for i := 0; i < len(words); i++ {
		w := words[i]
		var kv string
		switch {
		case w == "-c":
			if i+1 >= len(words) {
				return nil, errStartupOption
			}
			i++
			kv = words[i]
		case strings.HasPrefix(w, "--"):
			kv = w[2:]
		case strings.HasPrefix(w, "-c"):
			kv = w[2:]
		default:
			return nil, errStartupOption
		}
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return nil, errStartupOption
		}
		// The server reads dashes in a setting's name as underscores
		// (ParseLongOption).
		out = append(out, param{name: strings.ToLower(strings.ReplaceAll(name, "-", "_")), value: value})
	}
	return out, nil
}

// decideStartupParams asks the policy about the parameters the session
// passes upstream, as one batch of the SET statements that would set them:
// a startup parameter is a setting made before any statement, so the
// principal may set at startup exactly what it may SET afterwards. The
// decision goes through the statement path (policyHook.decide: custos'
// invariants, the policy, metrics and log). client_encoding is not asked
// about: custos pins it itself (checkStartupParams) and SET of it is
// refused for everyone. It returns nil (nothing to decide, or no policy),
// or the decision and, when it does not let the session start, the
// client's FATAL answer.
func (s *Server) decideStartupParams(ctx context.Context, ses *Session) (*policy.Decision, error) {
	if s.opts.Policy == nil || s.opts.Classifier == nil {
		return nil, nil
	}
	names := make([]string, 0, len(ses.Params))
	for name := range ses.Params {
		if name != "client_encoding" {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	sort.Strings(names)
	var q strings.Builder
	for _, name := range names {
		q.WriteString("SET ")
		q.WriteString(quoteIdent(strings.ToLower(name)))
		q.WriteString(" TO ")
		q.WriteString(quoteLiteral(ses.Params[name]))
		q.WriteString(";\n")
	}
	res, err := s.opts.Classifier.Classify(q.String())
	if err != nil {
		// A value the classifier cannot read (a NUL byte, a bound it
		// exceeds) is not something custos can decide.
		dec := &policy.Decision{ID: policy.NewDecisionID(), Reasons: []string{"custos could not classify the startup parameters: " + err.Error()}}
		return dec, startupRefusal(dec)
	}
	h := newPolicyHook(s, ses)
	dec := h.decide(ctx, res, res.Statements)
	if dec == nil || (dec.Allow && dec.RequireApproval == nil) {
		return dec, nil
	}
	return dec, startupRefusal(dec)
}

// startupRefusal ends a startup the policy did not allow. The code is
// 42501, as PostgreSQL's own FATAL for a startup parameter the role may
// not set ("permission denied to set parameter") and as custos' refusal of
// the same SET in a session, so clients and operators read it the same
// way. A parameter cannot wait for approval: a decision that asks for one
// refuses the startup too.
func startupRefusal(dec *policy.Decision) error {
	resp := refusal(dec)
	if resp == nil {
		resp = denyResponse(strings.Join(dec.Reasons, "; "), dec.ID)
	}
	resp.Severity, resp.SeverityUnlocalized = "FATAL", "FATAL"
	resp.Message = strings.Replace(resp.Message, "custos: ", "custos: startup parameters refused: ", 1)
	resp.Hint = "Connect without the parameter (PGOPTIONS, options, or the connection string); run SET after connecting if the policy allows it."
	return &clientError{resp: resp}
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
