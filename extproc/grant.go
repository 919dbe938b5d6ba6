package extproc

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/custos-dev/custos/internal/envoyctx"
	"github.com/custos-dev/custos/internal/policy"
)

// Keys of the dynamic metadata ext_authz returns for an allowed request.
// Envoy stores it under envoyctx.ExtAuthzNamespace and forwards it to
// ext_proc in metadata_context; access logs can read it too, e.g.
// %DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%.
const (
	mdVersion       = "custos_version"
	mdDecisionID    = "decision_id"
	mdOutcome       = "outcome"
	mdPolicyVersion = "policy_version"
	mdSub           = "principal"
	mdIss           = "issuer"
	mdGroups        = "groups"
	mdAct           = "act"
	mdClientAddress = "client_address"
	mdResource      = "resource"
	mdResourceType  = "resource_type"
	mdReasons       = "reasons"
	mdApproval      = "require_approval"
	mdMask          = "mask"
)

// grantVersion is the version of the metadata's shape.
const grantVersion = 1

// errNoGrant: metadata_context carries no decision of custos' ext_authz.
var errNoGrant = errors.New("no authorization decision in the request's metadata")

// grant is what ext_authz tells ext_proc about a request it let through:
// who sent it, which resource it is for, and what policy decided.
type grant struct {
	DecisionID    string
	Outcome       policy.Outcome // allow or approve
	PolicyVersion string
	Sub, Iss      string
	Groups        []string
	Act           string
	ClientAddress string
	Resource      string
	ResourceType  string
	Reasons       []string
	Approval      *policy.Approval // set when Outcome is approve
	Mask          *policy.Mask     // nil: no rules, detection only
}

func strList(ss []string) *structpb.Value {
	vs := make([]*structpb.Value, len(ss))
	for i, s := range ss {
		vs[i] = structpb.NewStringValue(s)
	}
	return structpb.NewListValue(&structpb.ListValue{Values: vs})
}

// toStruct is the grant as dynamic metadata, sealed by mac for b.
func (g *grant) toStruct(b binding, mac []byte) *structpb.Struct {
	f := map[string]*structpb.Value{
		mdVersion:       structpb.NewNumberValue(grantVersion),
		mdDecisionID:    structpb.NewStringValue(g.DecisionID),
		mdOutcome:       structpb.NewStringValue(string(g.Outcome)),
		mdPolicyVersion: structpb.NewStringValue(g.PolicyVersion),
		mdSub:           structpb.NewStringValue(g.Sub),
		mdIss:           structpb.NewStringValue(g.Iss),
		mdGroups:        strList(g.Groups),
		mdClientAddress: structpb.NewStringValue(g.ClientAddress),
		mdResource:      structpb.NewStringValue(g.Resource),
		mdResourceType:  structpb.NewStringValue(g.ResourceType),
		mdReasons:       strList(g.Reasons),
		mdRequestID:     structpb.NewStringValue(b.RequestID),
		mdSealedAt:      structpb.NewNumberValue(float64(b.SealedAt)),
		mdExpires:       structpb.NewNumberValue(float64(b.Expires)),
		mdSeal:          structpb.NewStringValue(encodeSeal(mac)),
	}
	if g.Act != "" {
		f[mdAct] = structpb.NewStringValue(g.Act)
	}
	if a := g.Approval; a != nil {
		f[mdApproval] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"approver_groups": strList(a.ApproverGroups),
			"quorum":          structpb.NewNumberValue(float64(a.Quorum)),
			"ttl":             structpb.NewStringValue(a.TTL),
		}})
	}
	if m := g.Mask; m != nil {
		paths := make(map[string]*structpb.Value, len(m.JSONPaths))
		for _, p := range slices.Sorted(maps.Keys(m.JSONPaths)) {
			paths[p] = structpb.NewStringValue(m.JSONPaths[p])
		}
		f[mdMask] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"json_paths": structpb.NewStructValue(&structpb.Struct{Fields: paths}),
			"detect_pan": structpb.NewBoolValue(m.DetectPAN),
			"reveal":     structpb.NewStringValue(m.Reveal),
		}})
	}
	return &structpb.Struct{Fields: f}
}

// grantFrom reads the grant and its seal out of an ext_proc message's
// metadata_context; nothing of it is verified yet (sealer.verify). The
// seal is nil when the metadata has none. Anything missing or of the wrong
// type is an error wrapping errGrantMissing or errGrantMalformed: the
// caller fails closed.
func grantFrom(md *corev3.Metadata) (*grant, *sealState, error) {
	g, err := readGrant(md)
	if err != nil {
		if !errors.Is(err, errNoGrant) {
			err = fmt.Errorf("%w: %w", errGrantMalformed, err)
		} else {
			err = fmt.Errorf("%w: %w", errGrantMissing, err)
		}
		return nil, nil, err
	}
	s := md.GetFilterMetadata()[envoyctx.ExtAuthzNamespace]
	if _, ok := s.Fields[mdSeal]; !ok {
		return g, nil, nil
	}
	r := fieldReader{s: s}
	st := &sealState{
		requestID: r.str(mdRequestID),
		sealedAt:  int64(r.number(mdSealedAt)),
		expires:   int64(r.number(mdExpires)),
	}
	mac, err := decodeSeal(r.str(mdSeal))
	if err = errors.Join(r.err, err); err != nil {
		return nil, nil, fmt.Errorf("%w: decision metadata: %w", errGrantMalformed, err)
	}
	st.mac = mac
	return g, st, nil
}

// readGrant reads the grant's own fields.
func readGrant(md *corev3.Metadata) (*grant, error) {
	s := md.GetFilterMetadata()[envoyctx.ExtAuthzNamespace]
	if s == nil || s.Fields[mdVersion] == nil {
		return nil, errNoGrant
	}
	r := fieldReader{s: s}
	if v := r.number(mdVersion); v != grantVersion {
		return nil, fmt.Errorf("decision metadata version %v is not %d", v, grantVersion)
	}
	g := &grant{
		DecisionID:    r.str(mdDecisionID),
		Outcome:       policy.Outcome(r.str(mdOutcome)),
		PolicyVersion: r.str(mdPolicyVersion),
		Sub:           r.str(mdSub),
		Iss:           r.str(mdIss),
		Groups:        r.list(mdGroups),
		ClientAddress: r.str(mdClientAddress),
		Resource:      r.str(mdResource),
		ResourceType:  r.str(mdResourceType),
		Reasons:       r.list(mdReasons),
	}
	if v, ok := s.Fields[mdAct]; ok {
		g.Act = v.GetStringValue()
	}
	if a := r.sub(mdApproval); a != nil {
		ar := fieldReader{s: a}
		g.Approval = &policy.Approval{
			ApproverGroups: ar.list("approver_groups"),
			Quorum:         int(ar.number("quorum")),
			TTL:            ar.str("ttl"),
		}
		r.err = errors.Join(r.err, ar.err)
	}
	if m := r.sub(mdMask); m != nil {
		mr := fieldReader{s: m}
		g.Mask = &policy.Mask{JSONPaths: map[string]string{}}
		if paths := mr.sub("json_paths"); paths != nil {
			for k, v := range paths.Fields {
				sv, ok := v.GetKind().(*structpb.Value_StringValue)
				if !ok {
					mr.err = errors.Join(mr.err, fmt.Errorf("mask.json_paths[%q] is not a string", k))
					continue
				}
				g.Mask.JSONPaths[k] = sv.StringValue
			}
		}
		g.Mask.DetectPAN = mr.boolean("detect_pan")
		g.Mask.Reveal = mr.str("reveal")
		r.err = errors.Join(r.err, mr.err)
	}
	if r.err != nil {
		return nil, fmt.Errorf("decision metadata: %w", r.err)
	}
	switch g.Outcome {
	case policy.OutcomeAllow:
	case policy.OutcomeApprove:
		if g.Approval == nil {
			return nil, errors.New("decision metadata: outcome approve without require_approval")
		}
	default:
		return nil, fmt.Errorf("decision metadata: outcome %q lets nothing through", g.Outcome)
	}
	if g.DecisionID == "" || g.Sub == "" || g.Iss == "" {
		return nil, errors.New("decision metadata: decision id, principal or issuer is empty")
	}
	return g, nil
}

// fieldReader reads typed fields of a Struct, collecting type errors.
type fieldReader struct {
	s   *structpb.Struct
	err error
}

func (r *fieldReader) wrong(key, want string) {
	r.err = errors.Join(r.err, fmt.Errorf("%s is not a %s", key, want))
}

func (r *fieldReader) str(key string) string {
	v, ok := r.s.Fields[key]
	if !ok {
		return ""
	}
	s, ok := v.GetKind().(*structpb.Value_StringValue)
	if !ok {
		r.wrong(key, "string")
		return ""
	}
	return s.StringValue
}

func (r *fieldReader) number(key string) float64 {
	n, ok := r.s.Fields[key].GetKind().(*structpb.Value_NumberValue)
	if !ok {
		r.wrong(key, "number")
		return 0
	}
	return n.NumberValue
}

func (r *fieldReader) boolean(key string) bool {
	v, ok := r.s.Fields[key]
	if !ok {
		return false
	}
	b, ok := v.GetKind().(*structpb.Value_BoolValue)
	if !ok {
		r.wrong(key, "bool")
		return false
	}
	return b.BoolValue
}

func (r *fieldReader) list(key string) []string {
	v, ok := r.s.Fields[key]
	if !ok {
		return nil
	}
	l, ok := v.GetKind().(*structpb.Value_ListValue)
	if !ok {
		r.wrong(key, "list")
		return nil
	}
	out := make([]string, 0, len(l.ListValue.GetValues()))
	for _, e := range l.ListValue.GetValues() {
		s, ok := e.GetKind().(*structpb.Value_StringValue)
		if !ok {
			r.wrong(key, "list of strings")
			return nil
		}
		out = append(out, s.StringValue)
	}
	return out
}

func (r *fieldReader) sub(key string) *structpb.Struct {
	v, ok := r.s.Fields[key]
	if !ok {
		return nil
	}
	s, ok := v.GetKind().(*structpb.Value_StructValue)
	if !ok {
		r.wrong(key, "struct")
		return nil
	}
	return s.StructValue
}
