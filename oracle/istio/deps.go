package main

// The Istio packages the oracle's questions use, imported here so go.mod and go.sum
// cover them before any question's file exists (the subcommands add their own imports).
import (
	_ "istio.io/istio/pilot/pkg/networking/core"
	_ "istio.io/istio/pkg/wasm"
)
