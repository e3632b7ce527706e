package server

import (
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// checkMessage refuses what the proto decoder lets through: fields this
// server does not know (a newer client's constraint would otherwise be
// ignored in silence), enum numbers that name no value, and durations or
// timestamps out of range. Errors name the field.
func checkMessage(m protoreflect.Message) error {
	if len(m.GetUnknown()) > 0 {
		return errs.New(errs.InvalidArgument, "%s: fields this server does not know", m.Descriptor().FullName())
	}
	if err := checkWellKnown(m.Interface()); err != nil {
		return err
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			for i := 0; i < v.List().Len() && err == nil; i++ {
				err = checkValue(fd, v.List().Get(i))
			}
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				err = checkValue(fd.MapValue(), mv)
				return err == nil
			})
		default:
			err = checkValue(fd, v)
		}
		return err == nil
	})
	return err
}

func checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) error {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByNumber(v.Enum()) == nil {
			return errs.New(errs.InvalidArgument, "%s: %d is not a %s", fd.Name(), v.Enum(), fd.Enum().Name())
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return checkMessage(v.Message())
	}
	return nil
}

func checkWellKnown(m protoreflect.ProtoMessage) error {
	var err error
	switch w := m.(type) {
	case *durationpb.Duration:
		err = w.CheckValid()
	case *timestamppb.Timestamp:
		err = w.CheckValid()
	}
	if err != nil {
		return errs.New(errs.InvalidArgument, "%v", err)
	}
	return nil
}
