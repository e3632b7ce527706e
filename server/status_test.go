package server

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// TestEveryKindMapsToItsCode walks every Kind: each maps to the gRPC code
// of its name, and an error of any kind is never answered as OK.
func TestEveryKindMapsToItsCode(t *testing.T) {
	for _, k := range errs.Kinds() {
		want := strings.ReplaceAll(k.String(), " ", "")
		if got := codeOf(k); !strings.EqualFold(got.String(), want) {
			t.Errorf("kind %v maps to %v", k, got)
		}
		st := toStatus(errs.New(k, "boom"))
		if st == nil || status.Code(st) == codes.OK {
			t.Errorf("an error of kind %v became %v", k, st)
		}
	}
	unnamed := errs.Kind(len(errs.Kinds()) + 7)
	if codeOf(unnamed) != codes.Internal {
		t.Errorf("an unnamed kind maps to %v, not Internal", codeOf(unnamed))
	}
	if st := toStatus(errs.New(unnamed, "boom")); status.Code(st) != codes.Internal {
		t.Errorf("an error of an unnamed kind became %v", st)
	}
	if st := toStatus(errors.New("secret detail")); status.Code(st) != codes.Internal || strings.Contains(st.Error(), "secret") {
		t.Errorf("an untyped error became %v", st)
	}
}
