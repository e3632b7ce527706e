package server

import (
	"context"
	"os"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// StatusKeyID is the name GetStatus is decided on (keys.read): the
// states name the installation's backends and store, so a rule must name
// it (or every key) to show them.
const StatusKeyID = "sigil.status"

// statusService implements sigil.v1.StatusService from the readiness
// /readyz reports.
type statusService struct {
	sigilv1.UnimplementedStatusServiceServer
	s *Server
}

func (h *statusService) GetStatus(ctx context.Context, _ *sigilv1.GetStatusRequest) (*sigilv1.GetStatusResponse, error) {
	if namespace.FromContext(ctx) != namespace.Root {
		return nil, errs.New(errs.PermissionDenied, "the server's status is read in the root namespace")
	}
	r := h.s.readiness()
	host, _ := os.Hostname()
	out := &sigilv1.GetStatusResponse{Ready: r.Ready, Host: host, Version: Version().Version}
	names := make([]string, 0, len(r.Backends))
	for name := range r.Backends {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		out.Components = append(out.Components, component("backend", name, r.Backends[name]))
	}
	if r.Store != nil {
		out.Components = append(out.Components, component("store", "keyring store", *r.Store))
	}
	out.Components = append(out.Components, component("audit", "audit log", r.Audit))
	return out, nil
}

func component(kind, name string, st backendState) *sigilv1.ComponentStatus {
	c := &sigilv1.ComponentStatus{Kind: kind, Name: name, Up: st.Up, Detail: strings.TrimSpace(st.Detail)}
	if !st.LastHealthy.IsZero() {
		c.LastHealthy = timestamppb.New(st.LastHealthy)
	}
	return c
}
