package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sigil-hsm/sigil/client"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// newNS is `sigil ns`: the namespaces' lifecycle. Each subcommand names
// the namespace it is about; -n does not apply.
func newNS() *cobra.Command {
	cmd := &cobra.Command{Use: "ns", Short: "Manage namespaces: tenants and environments that cannot reach each other"}
	c := addClientFlags(cmd)
	var labels []string
	var owner string
	create := &cobra.Command{
		Use:   "create NAME [--label K=V …] [--owner TEXT]",
		Short: "Make an empty namespace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := parseLabels(labels)
			if err != nil {
				return err
			}
			return nsCall(cmd, c, func(ctx context.Context, cl *client.Client) (*sigilv1.Namespace, error) {
				resp, err := cl.Namespaces.CreateNamespace(ctx, &sigilv1.CreateNamespaceRequest{Namespace: args[0], Labels: l, Owner: owner})
				return resp.GetNamespace(), err
			})
		},
	}
	create.Flags().StringArrayVar(&labels, "label", nil, "a K=V label, repeatable")
	create.Flags().StringVar(&owner, "owner", "", "who answers for the namespace")
	get := &cobra.Command{
		Use: "get NAME", Short: "Show a namespace", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return nsCall(cmd, c, func(ctx context.Context, cl *client.Client) (*sigilv1.Namespace, error) {
				resp, err := cl.Namespaces.GetNamespace(ctx, &sigilv1.GetNamespaceRequest{Namespace: args[0]})
				return resp.GetNamespace(), err
			})
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List the namespaces you may read", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.use(cmd.Context(), func(cl *client.Client) error {
				resp, err := cl.Namespaces.ListNamespaces(cmd.Context(), &sigilv1.ListNamespacesRequest{})
				if err != nil {
					return err
				}
				out := make([]nsJSON, 0, len(resp.GetNamespaces()))
				for _, n := range resp.GetNamespaces() {
					out = append(out, toNSJSON(n))
				}
				if c.json {
					return printJSON(cmd.OutOrStdout(), out)
				}
				for _, n := range out {
					fmt.Fprintln(cmd.OutOrStdout(), n.line())
				}
				return nil
			})
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete an empty namespace (no keys, no JWK Sets)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.use(cmd.Context(), func(cl *client.Client) error {
				if _, err := cl.Namespaces.DeleteNamespace(cmd.Context(), &sigilv1.DeleteNamespaceRequest{Namespace: args[0]}); err != nil {
					return err
				}
				return c.emit(cmd, map[string]string{"deleted": args[0]}, "deleted namespace "+args[0])
			})
		},
	}
	freeze := &cobra.Command{
		Use: "freeze NAME", Short: "Refuse every signature in a namespace until a quorum unfreezes it", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return nsCall(cmd, c, func(ctx context.Context, cl *client.Client) (*sigilv1.Namespace, error) {
				resp, err := cl.Namespaces.FreezeNamespace(ctx, &sigilv1.FreezeNamespaceRequest{Namespace: args[0]})
				return resp.GetNamespace(), err
			})
		},
	}
	unfreeze := &cobra.Command{
		Use: "unfreeze NAME", Short: "Ask to lift a freeze: held until approved (sigil approvals)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return nsCall(cmd, c, func(ctx context.Context, cl *client.Client) (*sigilv1.Namespace, error) {
				resp, err := cl.Namespaces.UnfreezeNamespace(ctx, &sigilv1.UnfreezeNamespaceRequest{Namespace: args[0]})
				return resp.GetNamespace(), err
			})
		},
	}
	cmd.AddCommand(create, get, list, del, freeze, unfreeze)
	return cmd
}

// nsCall runs a call answering one namespace and prints it.
func nsCall(cmd *cobra.Command, c *clientFlags, fn func(context.Context, *client.Client) (*sigilv1.Namespace, error)) error {
	return c.use(cmd.Context(), func(cl *client.Client) error {
		n, err := fn(cmd.Context(), cl)
		if err != nil {
			return err
		}
		out := toNSJSON(n)
		return c.emit(cmd, out, out.line())
	})
}

// nsJSON is the `--json` shape of a namespace.
type nsJSON struct {
	Name       string            `json:"name"`
	Labels     map[string]string `json:"labels,omitempty"`
	Owner      string            `json:"owner,omitempty"`
	CreateTime string            `json:"create_time,omitempty"`
	Frozen     bool              `json:"frozen"`
	FrozenBy   string            `json:"frozen_by,omitempty"`
	FreezeTime string            `json:"freeze_time,omitempty"`
	Freezes    uint64            `json:"freezes"`
}

func toNSJSON(n *sigilv1.Namespace) nsJSON {
	out := nsJSON{Name: n.GetName(), Labels: n.GetLabels(), Owner: n.GetOwner(), Frozen: n.GetFrozen(), FrozenBy: n.GetFrozenBy(), Freezes: n.GetFreezes()}
	if n.GetCreateTime() != nil {
		out.CreateTime = n.GetCreateTime().AsTime().Format(time.RFC3339)
	}
	if n.GetFreezeTime() != nil {
		out.FreezeTime = n.GetFreezeTime().AsTime().Format(time.RFC3339)
	}
	return out
}

func (n nsJSON) line() string {
	var b strings.Builder
	b.WriteString(n.Name)
	if n.Frozen {
		fmt.Fprintf(&b, "  FROZEN by %s at %s", n.FrozenBy, n.FreezeTime)
	}
	if n.Owner != "" {
		fmt.Fprintf(&b, "  owner %s", n.Owner)
	}
	keys := make([]string, 0, len(n.Labels))
	for k := range n.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s=%s", k, n.Labels[k])
	}
	return b.String()
}
