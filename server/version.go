package server

import (
	"runtime"
	"runtime/debug"
)

// BuildInfo says which Sigil this is, from the build information Go
// embeds in every binary (no linker flags needed).
type BuildInfo struct {
	Version  string `json:"version"`  // the module version, "(devel)" in a work tree
	Commit   string `json:"commit"`   // vcs.revision, when built from a git checkout
	Modified bool   `json:"modified"` // the checkout had uncommitted changes
	Date     string `json:"date"`     // vcs.time: the commit's date
	Go       string `json:"go"`
}

// Version reads the binary's build information.
func Version() BuildInfo {
	v := BuildInfo{Version: "unknown", Commit: "unknown", Date: "unknown", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Version = bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.Date = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}
