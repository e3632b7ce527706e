package errs

import (
	"context"
	"errors"
	"fmt"
)

// Kind classifies an error by what the caller can do about it.
type Kind int

// The kinds, named after the gRPC codes they map to at the server edge.
const (
	Internal Kind = iota
	InvalidArgument
	NotFound
	AlreadyExists
	FailedPrecondition
	PermissionDenied
	ResourceExhausted
	Unavailable
	DeadlineExceeded
	Canceled
	// Aborted is a lost compare-and-swap race: retry with a fresh read.
	Aborted
	// Unauthenticated: the caller's credentials are missing, expired or
	// no longer trusted.
	Unauthenticated
)

var kindNames = map[Kind]string{
	Internal:           "internal",
	InvalidArgument:    "invalid argument",
	NotFound:           "not found",
	AlreadyExists:      "already exists",
	FailedPrecondition: "failed precondition",
	PermissionDenied:   "permission denied",
	ResourceExhausted:  "resource exhausted",
	Unavailable:        "unavailable",
	DeadlineExceeded:   "deadline exceeded",
	Canceled:           "canceled",
	Aborted:            "aborted",
	Unauthenticated:    "unauthenticated",
}

func (k Kind) String() string { return kindNames[k] }

// Kinds lists every kind, in declaration order.
func Kinds() []Kind {
	out := make([]Kind, 0, len(kindNames))
	for k := Internal; k <= Unauthenticated; k++ {
		out = append(out, k)
	}
	return out
}

// Error is an error of a Kind. Msg, the whole message, is safe to show to
// a client: it never holds secrets. Err, when set, is the cause (kept for
// errors.Is and errors.As); its text is already part of Msg.
type Error struct {
	Kind Kind
	Msg  string
	Err  error
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// New returns an error of kind k with a formatted message. A %w verb in
// format wraps its operand as the cause.
func New(k Kind, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	e := &Error{Kind: k, Msg: err.Error()}
	switch err.(type) {
	case interface{ Unwrap() error }:
		e.Err = errors.Unwrap(err)
	case interface{ Unwrap() []error }: // several %w: keep them all for errors.Is
		e.Err = err
	}
	return e
}

// Wrap returns err classified as kind k with msg as context. It returns nil
// for a nil err.
func Wrap(k Kind, err error, msg string) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: k, Msg: msg + ": " + err.Error(), Err: err}
}

// KindOf reports the kind of err: the outermost *Error in its chain, or the
// kind of a context error, else Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return Canceled
	}
	return Internal
}

// Is reports whether err is of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }

// FromContext classifies a context's error: DeadlineExceeded or Canceled,
// with what was being waited for.
func FromContext(ctx context.Context, waitingFor string) error {
	err := ctx.Err()
	if err == nil {
		return nil
	}
	k := Canceled
	if errors.Is(err, context.DeadlineExceeded) {
		k = DeadlineExceeded
	}
	return &Error{Kind: k, Msg: waitingFor, Err: err}
}
