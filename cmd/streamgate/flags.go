package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// usageError is a mistake in the command line or the environment: run
// prints it once with a one-line usage, and the process exits 2.
type usageError struct {
	cmd string // the subcommand; "" for the top level
	err error
}

func (e *usageError) Error() string {
	if e.cmd == "" {
		return e.err.Error()
	}
	return e.cmd + ": " + e.err.Error()
}

func (e *usageError) Unwrap() error { return e.err }

// usageLine says how to learn the right usage.
func (e *usageError) usageLine() string {
	if e.cmd == "" {
		return "usage: streamgate <subcommand> [flags]; 'streamgate help' lists the subcommands"
	}
	return fmt.Sprintf("usage: streamgate %s [flags]; 'streamgate %s -h' lists them", e.cmd, e.cmd)
}

// badUsage wraps err as a usage mistake of the subcommand.
func badUsage(cmd string, err error) error {
	if err == nil {
		return nil
	}
	return &usageError{cmd: cmd, err: err}
}

// parseFlags parses args, then fills every flag not given on the command
// line from its STREAMGATE_* environment variable. A mistake is a
// *usageError; -h or --help prints the flag set's Usage and returns
// flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) error {
	_, err := parseSettings(fs, args, lookupEnv)
	return err
}

// sources records the flags the environment set, so that a message about
// a bad setting names what the user wrote.
type sources map[string]bool

// describe names a flag, and its environment variable when that set it.
func (s sources) describe(name string) string {
	if s[name] {
		return "--" + name + " (" + envName(name) + ")"
	}
	return "--" + name
}

// parseSettings is parseFlags that also tells which flags came from the
// environment.
func parseSettings(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) (sources, error) {
	if err := parseQuietly(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage()
			return nil, err
		}
		return nil, badUsage(fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return nil, badUsage(fs.Name(), fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	src := sources{}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		name := envName(f.Name)
		if v, ok := lookupEnv(name); ok {
			if e := f.Value.Set(v); e != nil {
				err = badValue(fmt.Sprintf("%s=%q", name, v), f.Value, e)
				return
			}
			src[f.Name] = true
		}
	})
	return src, badUsage(fs.Name(), err)
}

// parseQuietly runs fs.Parse without the flag package's own reporting,
// which prints the error and then the whole flag list: run reports the
// error once, with a one-line usage. A bad value's error says what form the
// value should take.
func parseQuietly(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	// The flag package words a value's error itself ("invalid value ...
	// for flag -x: parse error"); the wrappers keep ours. They are taken
	// off again because fs.PrintDefaults names a value's type by its Go
	// type.
	var badErr error
	originals := map[*flag.Flag]flag.Value{}
	fs.VisitAll(func(f *flag.Flag) {
		originals[f] = f.Value
		f.Value = checkedValue{Value: f.Value, name: f.Name, bad: &badErr}
	})
	err := fs.Parse(args)
	for f, v := range originals {
		f.Value = v
	}
	fs.SetOutput(out)
	fs.Usage = usage
	if err != nil && badErr != nil && !errors.Is(err, flag.ErrHelp) {
		return badErr
	}
	return err
}

// checkedValue records a flag value's error in the form of badValue.
type checkedValue struct {
	flag.Value
	name string
	bad  *error
}

func (c checkedValue) Set(v string) error {
	if err := c.Value.Set(v); err != nil {
		*c.bad = badValue(fmt.Sprintf("--%s %q", c.name, v), c.Value, err)
		return *c.bad
	}
	return nil
}

// IsBoolFlag keeps --flag (without =true) working for boolean flags.
func (c checkedValue) IsBoolFlag() bool {
	b, ok := c.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// badValue is the error of a value that did not parse, worded after what
// was written (--ack-timeout "banana", or STREAMGATE_ACK_TIMEOUT="banana").
func badValue(written string, v flag.Value, err error) error {
	if form := valueForm(v); form != "" {
		return fmt.Errorf("%s: want %s", written, form)
	}
	return fmt.Errorf("%s: %w", written, err)
}

// valueForm describes the values a standard flag type accepts; "" for
// other types, whose Set errors say it themselves.
func valueForm(v flag.Value) string {
	g, ok := v.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return "a duration such as 60s"
	case int, int64:
		return "an integer such as 1000"
	case uint, uint64:
		return "a non-negative integer such as 1000"
	case float64:
		return "a number such as 0.5"
	case bool:
		return "true or false"
	}
	return ""
}

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return "STREAMGATE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// listFlag is a comma-separated list; repeating the flag appends.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// newLogger builds the process logger. Durations are written as text
// ("1.5s") by both formats; JSON would otherwise write nanoseconds.
func newLogger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: durationAsText}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}

// durationAsText is a slog ReplaceAttr that writes durations as
// time.Duration.String does.
func durationAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// newFlagSet makes a subcommand's flag set; its Usage (-h) lists the
// flags with their environment variables.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printFlags(fs) }
	return fs
}

// printFlags writes a subcommand's usage to its flag set's output.
func printFlags(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "usage: streamgate %s [flags]\n\n", fs.Name())
	if s := summary(fs.Name()); s != "" {
		fmt.Fprintf(w, "%s\n\n", s)
	}
	fmt.Fprintf(w, "flags (each also read from its environment variable, shown in brackets; a flag given wins):\n")
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if _, ok := f.Value.(*listFlag); ok {
			typ = "list"
		}
		head := "  --" + f.Name
		if typ != "" {
			head += " " + typ
		}
		fmt.Fprintf(w, "%-40s [%s]\n", head, envName(f.Name))
		switch f.DefValue {
		case "", "0", "false":
		default:
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "      %s\n", usage)
	})
}

var osLookupEnv = os.LookupEnv
