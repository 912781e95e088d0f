// Command istio-values prints a JSON Schema (draft-07) of Istio's typed Helm values: the
// message istio.operator.v1alpha1.Values of istio.io/istio operator/pkg/apis, the type istioctl
// reads `spec.values` into. `kgops istio-values --write` builds it from the module version
// versions.yaml pins (istio.valuesApi) and writes schemas/upstream/istio-values-<istio>.json,
// which the upstream values check of `make validate` reads.
//
// The schema follows protojson's strict unmarshalling (DiscardUnknown false): every message is an
// object whose unknown keys are refused, fields are accepted by JSON name and proto name, the
// well-known wrapper types take their scalar (or null), Struct/Value take anything.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"google.golang.org/protobuf/reflect/protoreflect"

	"istio.io/istio/operator/pkg/apis"
)

type schema = map[string]any

func nullable(types ...string) schema {
	return schema{"type": append(types, "null")}
}

var wellKnown = map[protoreflect.FullName]schema{
	"google.protobuf.Struct":      nullable("object"),
	"google.protobuf.Value":       {},
	"google.protobuf.ListValue":   nullable("array"),
	"google.protobuf.Any":         nullable("object"),
	"google.protobuf.Duration":    nullable("string"),
	"google.protobuf.Timestamp":   nullable("string"),
	"google.protobuf.BoolValue":   nullable("boolean"),
	"google.protobuf.StringValue": nullable("string"),
	"google.protobuf.BytesValue":  nullable("string"),
	"google.protobuf.Int32Value":  nullable("integer", "string"),
	"google.protobuf.UInt32Value": nullable("integer", "string"),
	"google.protobuf.Int64Value":  nullable("integer", "string"),
	"google.protobuf.UInt64Value": nullable("integer", "string"),
	"google.protobuf.FloatValue":  nullable("number", "string"),
	"google.protobuf.DoubleValue": nullable("number", "string"),
	// Istio's own JSON form (operator/pkg/apis/value_types_json.go): a number or a string.
	"istio.operator.v1alpha1.IntOrString": nullable("integer", "string"),
}

func scalar(fd protoreflect.FieldDescriptor, defs schema) schema {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return nullable("boolean")
	case protoreflect.StringKind, protoreflect.BytesKind:
		return nullable("string")
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Int64Kind,
		protoreflect.Sint64Kind, protoreflect.Sfixed64Kind, protoreflect.Uint64Kind,
		protoreflect.Fixed64Kind:
		// protojson takes integers as numbers or decimal strings.
		return nullable("integer", "string")
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return nullable("number", "string")
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		names := []any{nil}
		for i := 0; i < values.Len(); i++ {
			names = append(names, string(values.Get(i).Name()), int(values.Get(i).Number()))
		}
		return schema{"enum": names}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return message(fd.Message(), defs)
	}
	panic(fmt.Sprintf("%s: unhandled kind %s", fd.FullName(), fd.Kind()))
}

func field(fd protoreflect.FieldDescriptor, defs schema) schema {
	switch {
	case fd.IsMap():
		return schema{"type": []string{"object", "null"}, "additionalProperties": scalar(fd.MapValue(), defs)}
	case fd.IsList():
		return schema{"type": []string{"array", "null"}, "items": scalar(fd, defs)}
	}
	return scalar(fd, defs)
}

// message is a $ref to the definition of md, written into defs on first use.
func message(md protoreflect.MessageDescriptor, defs schema) schema {
	if s, ok := wellKnown[md.FullName()]; ok {
		return s
	}
	name := string(md.FullName())
	ref := schema{"$ref": "#/definitions/" + name}
	if _, done := defs[name]; done {
		return ref
	}
	props := schema{}
	def := schema{"type": []string{"object", "null"}, "additionalProperties": false, "properties": props}
	defs[name] = def
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		s := field(fd, defs)
		props[fd.JSONName()] = s
		props[string(fd.Name())] = s
	}
	return ref
}

func main() {
	defs := schema{}
	root := message((&apis.Values{}).ProtoReflect().Descriptor(), defs)
	out := schema{
		"$schema":     "http://json-schema.org/draft-07/schema#",
		"title":       "istio.operator.v1alpha1.Values (istio.io/istio operator/pkg/apis)",
		"$ref":        root["$ref"],
		"definitions": defs,
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
