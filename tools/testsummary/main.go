// Command testsummary reads `go test -json` and prints what `go test` prints without -v (each
// package's result line, and the whole output of every test that failed), then the tests that
// were skipped, with why, so that a skip is never silent. It exits 1 when a test, a package or
// a build failed, or when no package reported at all (go test stopped before running). `make test` pipes the test run through it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	os.Exit(run(os.Stdin, os.Stdout))
}

func run(in io.Reader, out io.Writer) int {
	type key struct{ pkg, test string }
	outputs := map[key][]string{}
	var skipped []string
	failed, results := false, 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			fmt.Fprintln(out, sc.Text()) // not an event: go itself speaking
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output", "build-output":
			if e.Test == "" {
				if isResultLine(e.Output) {
					fmt.Fprint(out, e.Output)
				} else {
					outputs[k] = append(outputs[k], e.Output)
				}
				continue
			}
			outputs[k] = append(outputs[k], e.Output)
		case "fail", "build-fail":
			failed = true
			if e.Test == "" {
				// A package that failed without its test failing (a panic in a goroutine, a
				// timeout, os.Exit): what its unfinished tests printed says why.
				for other, lines := range outputs {
					if other.pkg == e.Package && other.test != "" {
						fmt.Fprint(out, strings.Join(lines, ""))
						delete(outputs, other)
					}
				}
			}
			fmt.Fprint(out, strings.Join(outputs[k], ""))
			delete(outputs, k)
		case "skip":
			if e.Test != "" {
				skipped = append(skipped, fmt.Sprintf("%s %s: %s", e.Package, e.Test, skipReason(outputs[k])))
			}
			delete(outputs, k)
		case "pass":
			delete(outputs, k)
		}
		if e.Test == "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip") {
			results++
		}
	}
	if len(skipped) > 0 {
		slices.Sort(skipped)
		fmt.Fprintf(out, "\nskipped tests (%d):\n", len(skipped))
		for _, s := range skipped {
			fmt.Fprintln(out, "  "+s)
		}
	}
	if results == 0 { // go test stopped before any package ran: what it said is above
		fmt.Fprintln(out, "testsummary: no package result: go test did not run")
		return 1
	}
	if failed || sc.Err() != nil {
		return 1
	}
	return 0
}

// isResultLine reports whether a package's output line is its result: ok, FAIL or no tests.
func isResultLine(s string) bool {
	return strings.HasPrefix(s, "ok  \t") || strings.HasPrefix(s, "FAIL\t") || strings.HasPrefix(s, "?   \t") ||
		s == "FAIL\n"
}

// skipReason is the message a skipped test gave, from its output.
func skipReason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l != "" && !strings.HasPrefix(l, "---") && !strings.HasPrefix(l, "===") {
			return l
		}
	}
	return "no reason given"
}
