package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// envAnnotation marks a flag that an environment variable may set.
const envAnnotation = "stated_env"

// envName is the variable that sets a flag: STATED_ and the flag name in
// upper snake case.
func envName(flag string) string {
	return "STATED_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// bindEnv lets environment variables set the named flags of fs.
func bindEnv(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fs.SetAnnotation(n, envAnnotation, []string{envName(n)}); err != nil {
			panic(fmt.Sprintf("bind env to flag %s: %v", n, err)) // a programming error
		}
		f := fs.Lookup(n)
		f.Usage += fmt.Sprintf(" (env %s)", envName(n))
	}
}

// applyEnv sets every env-bound flag the command line did not set from its
// environment variable, so a flag wins over the environment.
func applyEnv(fs *pflag.FlagSet, env lookupEnv) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		names := f.Annotations[envAnnotation]
		if err != nil || f.Changed || len(names) == 0 {
			return
		}
		// An empty variable is unset (a manifest's `value: ""`, an
		// unset shell variable expanded): it must not clear what the
		// config file sets, a token file least of all.
		v, ok := env(names[0])
		if !ok || v == "" {
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("environment variable %s: %w", names[0], valueError(f.Name, configValue{text: v}, e))
		}
	})
	return err
}
