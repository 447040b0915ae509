package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	// The yaml.v2 decoder sigs.k8s.io/yaml wraps: unlike YAML-to-JSON, it
	// hands a scalar's text to a string target as written, so that
	// `socket-mode: 0660` stays "0660" (not 432) and `node-id: 007` stays
	// "007" when it reaches the flag's Set.
	yaml "sigs.k8s.io/yaml/goyaml.v2"

	"github.com/statedhq/stated/internal/redact"
)

// Where a run flag's value came from, lowest precedence first.
const (
	sourceDefault = "default"
	sourceFile    = "file"
	sourceEnv     = "env"
	sourceFlag    = "flag"
)

// notInConfig are run's flags that a config file cannot hold: the ones
// that choose or show the file, and help.
var notInConfig = []string{"config", "print-config", "help"}

// configValue is one value of a config file: a scalar's text, or a list's.
type configValue struct {
	text   string
	list   []string
	isList bool
	// decoded is false for a null, which the decoder never hands to
	// UnmarshalYAML.
	decoded bool
	// problem says why the value cannot set a flag, if it cannot. The
	// decoder's own errors would not name the key.
	problem string
}

// UnmarshalYAML keeps the text of a scalar, or of each item of a list of
// scalars; anything else is a problem reported with its key.
func (v *configValue) UnmarshalYAML(unmarshal func(any) error) error {
	v.decoded = true
	var probe any
	if err := unmarshal(&probe); err != nil {
		return err
	}
	switch probe.(type) {
	case []any:
		v.isList = true
		if err := unmarshal(&v.list); err != nil {
			v.problem = "a list of something other than plain values"
		}
		return nil
	case map[any]any:
		v.problem = "a mapping; want a plain value or a list"
		return nil
	}
	return unmarshal(&v.text)
}

// configFile is a parsed config file: run's flags by name.
type configFile struct {
	path   string
	values map[string]configValue
}

// readConfig parses the YAML file at path. Duplicate keys are refused.
func readConfig(path string) (*configFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	return parseConfig(path, data)
}

// parseConfig parses data, read from path, strictly: duplicate keys, and
// a document that is not a mapping of names to values, are errors that
// name the file.
func parseConfig(path string, data []byte) (*configFile, error) {
	cf := &configFile{path: path, values: map[string]configValue{}}
	var top any
	if err := yaml.Unmarshal(data, &top); err == nil {
		if _, ok := top.(map[any]any); !ok && top != nil {
			return nil, fmt.Errorf("config file %s: want a mapping of run flag names to values (node-id: n1), one per line", path)
		}
	}
	if err := yaml.UnmarshalStrict(data, &cf.values); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.ReplaceAll(strings.TrimPrefix(msg, "unmarshal errors:\n  "), "\n  ", "; ")
		return nil, fmt.Errorf("config file %s: %s", path, msg)
	}
	return cf, nil
}

// configFlags are the flags of cmd that a config file may set, in
// the order --help lists them.
func configFlags(fs *pflag.FlagSet) []*pflag.Flag {
	var out []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(notInConfig, f.Name) {
			out = append(out, f)
		}
	})
	return out
}

// setByEnv reports whether the environment set f: applyEnv sets an
// env-bound flag the command line left unset whenever its variable is
// set and not empty.
func setByEnv(f *pflag.Flag, env lookupEnv) bool {
	names := f.Annotations[envAnnotation]
	if f.Changed || len(names) == 0 {
		return false
	}
	v, ok := env(names[0])
	return ok && v != ""
}

// apply sets each flag of fs that cf holds and neither the command line
// nor the environment set, so that a flag wins over the environment and
// both over the file. A key that names no flag of fs, or a value its flag
// refuses, is an error naming the key and the file; no flag is set then.
func (cf *configFile) apply(fs *pflag.FlagSet, env lookupEnv) (sources map[string]string, err error) {
	flags := map[string]*pflag.Flag{}
	for _, f := range configFlags(fs) {
		flags[f.Name] = f
	}
	keys := make([]string, 0, len(cf.values))
	for k := range cf.values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if _, ok := flags[k]; !ok {
			return nil, fmt.Errorf("config file %s: unknown key %q: a key is a flag of stated run without its dashes (see stated run --help)", cf.path, k)
		}
		v := cf.values[k]
		switch {
		case !v.decoded:
			return nil, fmt.Errorf("config file %s: key %q has no value (write \"\" for an empty string)", cf.path, k)
		case v.problem != "":
			return nil, fmt.Errorf("config file %s: key %q: %s", cf.path, k, v.problem)
		}
		if v.isList && !isSlice(flags[k]) {
			return nil, fmt.Errorf("config file %s: key %q: a list, but --%s takes one value", cf.path, k, k)
		}
	}
	// Check every value, including those a flag or the environment
	// overrides, before setting any: a wrong file is wrong wherever it is
	// used.
	for _, k := range keys {
		if fv := freshValue(flags[k]); fv != nil {
			if err := setValue(fv, cf.values[k]); err != nil {
				return nil, fmt.Errorf("config file %s: key %q: %w", cf.path, k, valueError(k, cf.values[k], err))
			}
		}
	}
	sources = map[string]string{}
	for _, k := range keys {
		f := flags[k]
		if f.Changed || setByEnv(f, env) {
			continue
		}
		if err := setValue(f.Value, cf.values[k]); err != nil {
			return nil, fmt.Errorf("config file %s: key %q: %w", cf.path, k, valueError(k, cf.values[k], err))
		}
		sources[k] = sourceFile
	}
	return sources, nil
}

// freshValue is a zero value of f's type, for checking a value without
// setting f; nil for a type not listed, whose values are checked when set.
func freshValue(f *pflag.Flag) pflag.Value {
	fs := pflag.NewFlagSet("fresh", pflag.ContinueOnError)
	switch f.Value.Type() {
	case "string":
		fs.String("v", "", "")
	case "bool":
		fs.Bool("v", false, "")
	case "int":
		fs.Int("v", 0, "")
	case "int64":
		fs.Int64("v", 0, "")
	case "uint":
		fs.Uint("v", 0, "")
	case "uint32":
		fs.Uint32("v", 0, "")
	case "uint64":
		fs.Uint64("v", 0, "")
	case "float64":
		fs.Float64("v", 0, "")
	case "duration":
		fs.Duration("v", 0, "")
	case "stringSlice":
		fs.StringSlice("v", nil, "")
	default:
		return nil
	}
	return fs.Lookup("v").Value
}

// isSlice reports whether f takes a list.
func isSlice(f *pflag.Flag) bool {
	_, ok := f.Value.(pflag.SliceValue)
	return ok
}

// setValue sets a flag value from a config value: a list replaces a
// list flag's items, a scalar goes through Set as on the command line.
func setValue(fv pflag.Value, v configValue) error {
	if sv, ok := fv.(pflag.SliceValue); ok && v.isList {
		return sv.Replace(v.list)
	}
	if v.isList {
		return fv.Set(strings.Join(v.list, ","))
	}
	return fv.Set(v.text)
}

// valueError is a flag's refusal of v, for a message: the value masked
// if k names a secret, and then without the flag's own words, which may
// quote it.
func valueError(k string, v configValue, err error) error {
	if redact.Sensitive(k) {
		return fmt.Errorf("value %s is not valid for --%s", showValue(k, v), k)
	}
	return fmt.Errorf("value %s: %w", showValue(k, v), err)
}

// showValue is v quoted for an error message, masked if k names a secret.
func showValue(k string, v configValue) string {
	if redact.Sensitive(k) {
		return strconv.Quote(redact.Mask)
	}
	if v.isList {
		items := make([]string, len(v.list))
		for i, s := range v.list {
			items[i] = strconv.Quote(maskValue(s))
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	return strconv.Quote(maskValue(v.text))
}

// maskValue masks the credentials of a value that is a URL.
func maskValue(s string) string {
	if strings.Contains(s, "://") {
		return redact.URL(s)
	}
	return s
}

// flagSource is where f's value came from, given the flags the file set.
func flagSource(f *pflag.Flag, env lookupEnv, fromFile map[string]string) string {
	switch {
	case f.Changed:
		return sourceFlag
	case setByEnv(f, env):
		return sourceEnv
	case fromFile[f.Name] != "":
		return sourceFile
	}
	return sourceDefault
}

// printConfig writes every flag a config file may hold as YAML that
// --config accepts, each line ending in a comment with its source, and
// credentials masked (a masked value, read back, is the mask itself).
func printConfig(w io.Writer, fs *pflag.FlagSet, env lookupEnv, file string, fromFile map[string]string) error {
	var b strings.Builder
	b.WriteString("# stated run: the effective configuration; each line ends with where its value came from\n")
	b.WriteString("# (flag > env > file > default). Credentials are masked as " + redact.Mask + ".\n")
	if file != "" {
		fmt.Fprintf(&b, "# config file: %s\n", file)
	} else {
		b.WriteString("# config file: none\n")
	}
	for _, f := range configFlags(fs) {
		src := flagSource(f, env, fromFile)
		if src == sourceEnv {
			src += " " + f.Annotations[envAnnotation][0]
		}
		fmt.Fprintf(&b, "%s: %s  # %s\n", f.Name, yamlValue(f), src)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// yamlValue is f's value as a YAML value: bools and numbers bare, lists
// in flow style, everything else a double-quoted string (a JSON string is
// one), masked where it is a credential.
func yamlValue(f *pflag.Flag) string {
	mask := func(s string) string {
		if redact.Sensitive(f.Name) && s != "" {
			return redact.Mask
		}
		return maskValue(s)
	}
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		items := sv.GetSlice()
		quoted := make([]string, len(items))
		for i, s := range items {
			quoted[i] = strconv.Quote(mask(s))
		}
		return "[" + strings.Join(quoted, ", ") + "]"
	}
	switch f.Value.Type() {
	case "bool", "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		if !redact.Sensitive(f.Name) {
			return f.Value.String()
		}
	}
	return strconv.Quote(mask(f.Value.String()))
}

// applyConfigFile applies the config file at path (from --config or
// STATED_CONFIG; none if empty) to fs, and returns the flags it set.
func (c *cli) applyConfigFile(fs *pflag.FlagSet, path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	cf, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return cf.apply(fs, c.env)
}

// parseSocketMode parses --socket-mode: permission bits in octal.
func parseSocketMode(s string) (os.FileMode, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("--socket-mode %q: want permission bits in octal, from 0000 to 0777 (e.g. 0600 or 0660)", s)
	}
	return os.FileMode(m), nil
}

// newLogger is the daemon's logger on w, in --log-format at --log-level.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
