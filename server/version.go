package server

import (
	"cmp"
	"runtime"
	"runtime/debug"
)

// Set by the Makefile's builds (-ldflags -X): the git tag (git
// describe), commit and commit time. They win over the build information
// Go embeds, which a build with -buildvcs=false (GOFLAGS here) or from a
// source tarball lacks.
var (
	version string
	commit  string
	date    string
)

// BuildInfo says which Sigil this is: what the build stamped, else the
// build information Go embeds in every binary.
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
	if bi, ok := debug.ReadBuildInfo(); ok {
		fromBuildInfo(&v, bi)
	}
	v.Version, v.Commit, v.Date = cmp.Or(version, v.Version), cmp.Or(commit, v.Commit), cmp.Or(date, v.Date)
	return v
}

// fromBuildInfo fills v from what Go embeds: the module version and the
// vcs.* settings.
func fromBuildInfo(v *BuildInfo, bi *debug.BuildInfo) {
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
}
