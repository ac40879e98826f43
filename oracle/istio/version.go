package main

import (
	"encoding/json"
	"os"
	"runtime/debug"
)

// The one place the Istio pin is named is go.mod; this reports what was linked.
func init() {
	register("version", "the istio.io/istio version linked into this oracle", func([]string) error {
		out := map[string]string{"module": "istio.io/istio", "version": "unknown"}
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, dep := range info.Deps {
				if dep.Path == "istio.io/istio" {
					out["version"] = dep.Version
				}
			}
		}
		return json.NewEncoder(os.Stdout).Encode(out)
	})
}
