// Package flagenv lets every command-line flag take its default from an
// environment variable, ROUTEGUIDE_<FLAG> (upper case, dashes as underscores),
// so that containers are configured by environment and people by flags.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// Prefix starts the name of every variable that sets a flag.
const Prefix = "ROUTEGUIDE_"

// VarName is the environment variable that sets the flag called name.
func VarName(name string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse sets the flags of fs from the environment, through lookup (os.LookupEnv
// in a program), and then from args, which win. A variable that is set, even
// to the empty string, sets its flag: ROUTEGUIDE_ETCD= means standalone, just
// as --etcd= does. An invalid value comes back as one line naming the variable
// or flag. Parse returns flag.ErrHelp for -h and --help.
func Parse(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil {
			return
		}
		name := VarName(f.Name)
		value, ok := lookup(name)
		if !ok {
			return
		}
		if setErr := f.Value.Set(value); setErr != nil {
			err = fmt.Errorf("invalid value %q for %s: %v", value, name, setErr)
		}
	})
	if err != nil {
		return err
	}
	// The flag package prints its own error and usage; callers print ours.
	fs.SetOutput(discard{})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errors.New(strings.TrimSpace(err.Error()))
	}
	return nil
}

// Given reports whether the flag called name was set, on the command line
// of an fs that Parse has parsed or by its variable through lookup.
func Given(fs *flag.FlagSet, name string, lookup func(string) (string, bool)) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if _, ok := lookup(VarName(name)); ok {
		set = true
	}
	return set
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
