// Command compose-check loads Compose files the way `docker compose config`
// does, with compose-go (the loader of docker compose itself): it validates
// them against the Compose Specification schema, interpolates variables and
// prints the normalized project as YAML. It needs no Docker engine.
//
//	compose-check docker-compose.yml
//
// tests/chart/test_compose.py runs it; scripts/install-tools builds it.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check FILE...")
		os.Exit(2)
	}
	if err := check(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "compose-check:", err)
		os.Exit(1)
	}
}

func check(files []string) error {
	options, err := cli.NewProjectOptions(files, cli.WithOsEnv, cli.WithDotEnv)
	if err != nil {
		return err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return err
	}
	normalized, err := project.MarshalYAML()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(normalized)
	return err
}
