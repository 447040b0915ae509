// Command report turns `go test -bench` output (stdin, or the files named)
// from bench/run.sh into its markdown table: each row's figure, its
// reference from the same run and the ratio, medians over -count runs.
//
//	go run ./bench/report bench.txt
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/statedhq/stated/bench"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	in := stdin
	if len(args) > 0 {
		var readers []io.Reader
		for _, name := range args {
			if name == "-h" || name == "--help" {
				fmt.Fprintln(stdout, "usage: go run ./bench/report [FILE...]  (reads `go test -bench` output, default stdin; writes a markdown table)")
				return nil
			}
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			readers = append(readers, f)
		}
		in = io.MultiReader(readers...)
	}
	res, err := bench.Parse(in)
	if err != nil {
		return err
	}
	if len(res) == 0 {
		return fmt.Errorf("no benchmark results in the input")
	}
	return bench.Table(stdout, res)
}
