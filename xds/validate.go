package xds

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Validate runs m's proto validation (the protoc-gen-validate rules Envoy
// enforces) and that of every typed config inside it, at any depth. A
// typed config whose type is not registered is an error wrapping
// ErrUnknownType: Envoy could not load it either.
func Validate(m proto.Message) error {
	return validate(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name()))
}

// allValidator is what protoc-gen-validate generates.
type allValidator interface{ ValidateAll() error }

func validate(m protoreflect.Message, path string) error {
	if v, ok := m.Interface().(allValidator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return validateAnys(m, path)
}

// validateAnys finds the Any fields under m and validates their contents.
func validateAnys(m protoreflect.Message, path string) error {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: %w %q: %w", path, ErrUnknownType, a.GetTypeUrl(), err)
		}
		return validate(inner.ProtoReflect(), path+"("+string(inner.ProtoReflect().Descriptor().Name())+")")
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = validateAnys(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i))
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			mv := v.Map()
			var keys []string
			mv.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k.String())
				return true
			})
			slices.Sort(keys)
			for _, k := range keys {
				if err = validateAnys(mv.Get(protoreflect.ValueOfString(k).MapKey()).Message(), p+"["+k+"]"); err != nil {
					break
				}
			}
		case fd.Message() != nil:
			err = validateAnys(v.Message(), p)
		}
		return err == nil
	})
	return err
}
