package xds

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/custos-dev/custos/internal/envoyctx"
)

// toAny packs m deterministically, so equal configs give equal bytes and
// equal versions.
func toAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("packing %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return a, nil
}

// resourceMetadata names the protected resource of a listener, route or
// cluster under the custos filter metadata namespace.
func resourceMetadata(name, typ string, labels map[string]string) *corev3.Metadata {
	ls := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(labels))}
	for k, v := range labels {
		ls.Fields[k] = structpb.NewStringValue(v)
	}
	s := &structpb.Struct{Fields: map[string]*structpb.Value{
		"resource": structpb.NewStringValue(name),
		"type":     structpb.NewStringValue(typ),
		"labels":   structpb.NewStructValue(ls),
	}}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{envoyctx.MetadataNamespace: s}}
}
