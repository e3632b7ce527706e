package errs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestMessagesAndKinds(t *testing.T) {
	err := New(NotFound, "key %q: %w", "k1", io.EOF)
	if err.Error() != `key "k1": EOF` || !errors.Is(err, io.EOF) || KindOf(err) != NotFound {
		t.Fatalf("New: %q, kind %v", err, KindOf(err))
	}
	w := Wrap(Unavailable, io.ErrUnexpectedEOF, "reading")
	if w.Error() != "reading: unexpected EOF" || !errors.Is(w, io.ErrUnexpectedEOF) || !Is(w, Unavailable) {
		t.Fatalf("Wrap: %q", w)
	}
	if Wrap(Internal, nil, "x") != nil {
		t.Fatal("Wrap(nil) is not nil")
	}
	if k := KindOf(fmt.Errorf("outer: %w", w)); k != Unavailable {
		t.Fatalf("kind through fmt wrapping: %v", k)
	}
	if KindOf(fmt.Errorf("x: %w", context.DeadlineExceeded)) != DeadlineExceeded || KindOf(context.Canceled) != Canceled || KindOf(io.EOF) != Internal {
		t.Fatal("context and untyped kinds")
	}
	ctx, cancel := context.WithCancel(context.Background())
	if FromContext(ctx, "x") != nil {
		t.Fatal("FromContext of a live context")
	}
	cancel()
	if !Is(FromContext(ctx, "waiting"), Canceled) {
		t.Fatal("FromContext of a canceled context")
	}
}

func TestEveryKindIsNamed(t *testing.T) {
	if len(Kinds()) != len(kindNames) {
		t.Fatalf("Kinds lists %d kinds, %d are named", len(Kinds()), len(kindNames))
	}
	for _, k := range Kinds() {
		if k.String() == "" {
			t.Errorf("kind %d has no name", k)
		}
	}
}
