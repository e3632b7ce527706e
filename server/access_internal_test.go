package server

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	_ "github.com/sigil-hsm/sigil/purpose/all" // the purposes' services
	"github.com/sigil-hsm/sigil/purpose/raw"
)

// sigilPackage is the proto package of Sigil's own services.
const sigilPackage = "sigil.v1"

// sigilMethods walks every service descriptor of package sigil.v1 in the
// generated code and returns each method's full name.
func sigilMethods(t testing.TB) map[string]protoreflect.MethodDescriptor {
	t.Helper()
	_ = sigilv1.File_sigil_v1_keys_proto // the generated code is linked in
	out := map[string]protoreflect.MethodDescriptor{}
	protoregistry.GlobalFiles.RangeFilesByPackage(sigilPackage, func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				out["/"+string(sd.FullName())+"/"+string(md.Name())] = md
			}
		}
		return true
	})
	if len(out) == 0 {
		t.Fatal("no sigil.v1 services found")
	}
	return out
}

// SigilMethodNames lists every sigil.v1 method, sorted, for the external
// tests (the attack suite and FuzzGRPC).
func SigilMethodNames(t testing.TB) []string { return slices.Sorted(maps.Keys(sigilMethods(t))) }

// TestEverySigilMethodHasAnOperation fails when an RPC is added without
// an operation (it would be refused) or as a stream (the access checks
// are unary: it would be refused too), or when an operation names a
// method that no longer exists.
func TestEverySigilMethodHasAnOperation(t *testing.T) {
	methods := sigilMethods(t)
	operations := New(Options{}).routes.ops
	for name, md := range methods {
		if _, ok := operations[name]; !ok {
			t.Errorf("%s has no entry in operations: it is refused until it has one", name)
		}
		if md.IsStreamingClient() || md.IsStreamingServer() {
			t.Errorf("%s streams: streamAccess refuses every Sigil stream", name)
		}
	}
	for name := range operations {
		if _, ok := methods[name]; !ok {
			t.Errorf("operations names %s, which no service has", name)
		}
	}
	registered := 0
	for svc, info := range New(Options{}).grpc.GetServiceInfo() {
		if !strings.HasPrefix(svc, sigilPackage+".") {
			continue
		}
		for _, m := range info.Methods {
			registered++
			if _, ok := methods["/"+svc+"/"+m.Name]; !ok {
				t.Errorf("registered method /%s/%s is not in the descriptors", svc, m.Name)
			}
		}
	}
	if registered != len(methods) {
		t.Errorf("%d Sigil methods registered, %d described", registered, len(methods))
	}
}

func auditedServer(t *testing.T) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	al, err := audit.Open(context.Background(), audit.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	return New(Options{Audit: al}), path
}

func TestUnnamedAndMalformedRequestsAreRefusedAndAudited(t *testing.T) {
	s, path := auditedServer(t)
	handled := false
	h := func(context.Context, any) (any, error) { handled = true; return &sigilv1.GetKeyResponse{}, nil }
	ghost := &grpc.UnaryServerInfo{FullMethod: "/sigil.v1.KeyService/DeleteEverything"}
	if _, err := s.access(context.Background(), &sigilv1.GetKeyRequest{Id: "k"}, ghost, h); status.Code(toStatus(err)) != codes.PermissionDenied {
		t.Errorf("a method with no operation: %v", err)
	}
	bad := &sigilv1.SignRequest{}
	failed := &decodeFailure{size: 7, err: proto.Unmarshal([]byte("\x0a\x05ab\xffcd"), bad)}
	sign := &grpc.UnaryServerInfo{FullMethod: sigilv1.SigningService_Sign_FullMethodName}
	if _, err := s.access(context.WithValue(context.Background(), decodeKey{}, &failed), bad, sign, h); status.Code(toStatus(err)) != codes.InvalidArgument {
		t.Errorf("a request that did not decode: %v", err)
	}
	for _, req := range []*sigilv1.SignRequest{
		{KeyId: "k", Format: 99}, {KeyId: "k", Format: -1}, {KeyId: strings.Repeat("k", 65)}, {KeyId: ""}, {KeyId: "../k"},
	} {
		if _, err := s.access(context.Background(), req, sign, h); status.Code(toStatus(err)) != codes.InvalidArgument {
			t.Errorf("%v: %v", req, err)
		}
	}
	ghostReq := &sigilv1.GetKeyRequest{}
	s.access(context.WithValue(context.Background(), decodeKey{}, &failed), ghostReq, ghost, h) // refused before the request is checked
	if handled {
		t.Fatal("a refused request reached its handler")
	}
	log, _ := os.ReadFile(path)
	if n := strings.Count(string(log), `"outcome":"denied"`) + strings.Count(string(log), `"outcome":"failed"`); n != 8 {
		t.Errorf("%d audit records for 8 refusals:\n%s", n, log)
	}
	if !strings.Contains(string(log), `"operation":"/sigil.v1.KeyService/DeleteEverything","outcome":"denied","code":"PermissionDenied"`) {
		t.Errorf("the refusal of an unnamed method is not audited:\n%s", log)
	}
	if strings.Contains(string(log), strings.Repeat("k", 65)) {
		t.Error("an invalid key ID reached the audit log")
	}
	health := &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}
	if _, err := s.access(context.Background(), nil, health, h); err != nil || !handled {
		t.Errorf("health: %v", err)
	}
}

// hijacker is a purpose that claims a method of the key service.
type hijacker struct{ raw.Purpose }

func (hijacker) Name() string { return "hijack" }
func (hijacker) Operations() map[string]authz.Op {
	return map[string]authz.Op{sigilv1.KeyService_DisableKey_FullMethodName: authz.KeysRead}
}

// A purpose cannot take over a method the server or another purpose
// serves: the server refuses to start.
func TestAPurposeCannotClaimAnotherServicesMethod(t *testing.T) {
	for _, ps := range [][]purpose.Purpose{{hijacker{}}, {raw.Purpose{}, raw.Purpose{}}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%v: routing accepted a method claimed twice", ps)
				}
			}()
			routing(ps)
		}()
	}
}
