// Command istio-oracle answers what Istio itself does, using Istio's own packages
// (the module istio.io/istio pinned in go.mod) as a library: never a copy of them.
//
// Each question is a subcommand registered by its own file (see register), reading
// its input from flags and stdin and printing JSON on stdout. A failure Istio itself
// reports is part of the answer (JSON on stdout, exit 0); a failure of the oracle
// (bad input, a bug) goes to stderr with exit 2.
package main

import (
	"fmt"
	"os"
	"sort"
)

type subcommand struct {
	summary string
	run     func(args []string) error
}

var subcommands = map[string]subcommand{}

// register adds a subcommand; each question's file calls it from init().
func register(name, summary string, run func(args []string) error) {
	if _, dup := subcommands[name]; dup {
		panic("istio-oracle: subcommand registered twice: " + name)
	}
	subcommands[name] = subcommand{summary: summary, run: run}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: istio-oracle SUBCOMMAND [flags] (answers on stdout as JSON)")
	names := make([]string, 0, len(subcommands))
	for name := range subcommands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(os.Stderr, "  %-14s %s\n", name, subcommands[name].summary)
	}
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, ok := subcommands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "istio-oracle: unknown subcommand %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := cmd.run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "istio-oracle %s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
}
