package main

import (
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sigil-hsm/sigil/internal/config"
	"github.com/sigil-hsm/sigil/internal/secret"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

func newHSM() *cobra.Command {
	cmd := &cobra.Command{Use: "hsm", Short: "Prepare and check PKCS#11 tokens (run on the server's host, not through the server)"}
	cmd.AddCommand(newHSMInit(), newHSMCheck())
	return cmd
}

func newHSMInit() *cobra.Command {
	var module, label, pin, soPIN string
	cmd := &cobra.Command{
		Use:   "init --module PATH --label LABEL --pin file:F|env:V [--so-pin file:F|env:V]",
		Short: "Create a token with a user PIN, where the module can (SoftHSM, opencryptoki)",
		Long: `init initialises the first uninitialised token of the module as LABEL
and sets its user PIN (the PIN the backend's configuration names). The
PINs are read from files or environment variables, never the command
line. Without --so-pin, a random security-officer PIN is used and not
kept: the token then works, but its user PIN can never be reset. A
token already labelled LABEL is refused (initialising erases a token).
Network HSMs (Luna, CloudHSM, YubiHSM 2) make tokens with their own
tools: see docs/hsm.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			user, err := pinFrom(pin, "--pin")
			if err != nil {
				return err
			}
			so, err := pkcs11.RandomPIN()
			if soPIN != "" {
				so, err = pinFrom(soPIN, "--so-pin")
			}
			if err != nil {
				return err
			}
			_, err = pkcs11.InitToken(module, label, so, user)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "token %q initialised, with its user PIN\n", label)
			return err
		},
	}
	cmd.Flags().StringVar(&module, "module", "", "path of the PKCS#11 library")
	cmd.Flags().StringVar(&label, "label", "", "the new token's label (the backend's token:)")
	cmd.Flags().StringVar(&pin, "pin", "", "the user PIN: file:PATH or env:NAME")
	cmd.Flags().StringVar(&soPIN, "so-pin", "", "the security officer's PIN: file:PATH or env:NAME (random and not kept if unset)")
	for _, f := range []string{"module", "label", "pin"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}

// pinFrom reads a PIN from a secret reference, refusing a literal.
func pinFrom(ref, flag string) ([]byte, error) {
	if !secret.IsRef(ref) {
		return nil, fmt.Errorf("%s must be file:PATH or env:NAME (a PIN on the command line shows in ps and shell history)", flag)
	}
	v, err := secret.Ref(ref).Resolve(flag)
	if err != nil {
		return nil, err
	}
	return trimPIN(v), nil
}

// trimPIN drops the line ending a PIN file has.
func trimPIN(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

func newHSMCheck() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "For each pkcs11 backend: load the module, find the token, log in, and try every algorithm",
		Long: `check loads each pkcs11 backend's module, finds its token, logs in
with its PIN and, for every algorithm Sigil signs with, looks for the
mechanisms and generates a session key pair (gone when the check ends;
nothing is left on the token), signs and verifies: a table of what will
and will not work on this HSM before a key is made. It exits non-zero if
a backend cannot be used at all. Stop the server first if the module
allows one process only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			names := make([]string, 0, len(cfg.Backends))
			for name, b := range cfg.Backends {
				if b.Type == pkcs11.Type {
					names = append(names, name)
				}
			}
			if len(names) == 0 {
				return fmt.Errorf("%s has no pkcs11 backend", path)
			}
			sort.Strings(names)
			failed := 0
			for _, name := range names {
				if err := checkBackend(cmd, name, cfg.Backends[name]); err != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "backend %s: %s\n", name, oneLine(err))
					failed++
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d pkcs11 backends cannot be used", failed, len(names))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "the server's configuration file")
	cmd.MarkFlagRequired("config")
	return cmd
}

// checkBackend prints one backend's token and capability table.
func checkBackend(cmd *cobra.Command, name string, b config.Backend) error {
	tok, caps, err := pkcs11.Check(cmd.Context(), b.Decode)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	sessions := "not limited"
	if tok.MaxSessions > 0 {
		sessions = fmt.Sprint(tok.MaxSessions)
	}
	fmt.Fprintf(out, "backend %s: module %s, token %q (slot %d, %s %s, serial %s), login ok, sessions %s\n",
		name, tok.Module, tok.Label, tok.Slot, tok.Manufacturer, tok.Model, tok.Serial, sessions)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ALGORITHM\tMECHANISMS\tWORKS\tDETAIL")
	for _, c := range caps {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Algorithm, yesNo(c.Mechanisms), yesNo(c.Works), c.Detail)
	}
	return w.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
