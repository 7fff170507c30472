// Command benchtable reads `go test -bench` output (files, or stdin) and
// prints one table: each performance target of issue 12 with the value
// `make bench` measured, the target and a verdict, then the per-event
// costs of the micro benchmarks. Values come from b.ReportMetric; a row
// whose benchmark did not run (or failed) says so.
//
//	go run ./hack/benchtable [-strict] [FILE...]
//
// With -strict it exits 1 when a row misses its target or is missing.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// row is one line of the table: metric of the benchmark named bench
// (without the -GOMAXPROCS suffix), against target. Detail names more
// metrics of the same benchmark to print beside it.
type row struct {
	work   string
	bench  string
	metric string
	// max: the value must be at most target; min: at least; info: no target.
	cmp    string
	target float64
	detail []string
}

var rows = []row{
	{"host cost: untraced host process (3M read + 300k open), buildtraced running vs stopped", "BenchmarkHostCost", "idle-ratio", "max", 1.02, []string{"idle-stopped-s", "idle-running-s"}},
	{"host cost, busy host: same, while a traced build step runs vs an untraced one (tracer stopped)", "BenchmarkHostCost", "busy-ratio", "info", 0, []string{"busy-stopped-s", "busy-running-s"}},
	{"compile: go build -a of a net/http program in a RUN", "BenchmarkCompile", "ratio", "max", 1.03, []string{"untraced-s", "traced-s", "paired-ratio", "events/build", "events-lost"}},
	{"compile, kernel floor: untraced beside an empty sys_exit program / untraced", "BenchmarkCompile", "floor-ratio", "info", 0, []string{"floor-s", "over-floor-ratio"}},
	{"exec storm: 10,000 fork+exec of a static binary in a RUN", "BenchmarkExecStorm", "ratio", "max", 1.03, []string{"untraced-s", "traced-s", "paired-ratio", "events/build", "events-lost"}},
	{"exec storm, kernel floor: untraced beside an empty sys_exit program / untraced", "BenchmarkExecStorm", "floor-ratio", "info", 0, []string{"floor-s", "over-floor-ratio"}},
	{"exec cycle without BuildKit (fork+exec+wait of busybox true, paired batches): an empty sys_exit program / none", "BenchmarkExecCycle", "floor-ratio", "info", 0, []string{"off-us/cycle", "empty-us/cycle"}},
	{"exec cycle without BuildKit: tracked / untracked, probe attached (BPF ns per cycle; sys_exit's includes other tasks' calls)", "BenchmarkExecCycle", "tracer-ratio", "info", 0, []string{"untracked-us/cycle", "tracked-us/cycle", "bpf-ns/cycle", "sys_exit-ns/cycle", "sched_fork-ns/cycle", "sched_exec-ns/cycle", "sched_exit-ns/cycle"}},
	{"tmpfs file storm: untar + delete 50k files in a RUN", "BenchmarkUntarDelete50k/tmpfs", "ratio", "max", 1.05, []string{"untraced-s", "traced-s", "paired-ratio", "events/build", "events-lost"}},
	{"tmpfs file storm, kernel floor: untraced beside an empty sys_exit program / untraced", "BenchmarkUntarDelete50k/tmpfs", "floor-ratio", "info", 0, []string{"floor-s", "over-floor-ratio"}},
	{"cached rebuild vs the stock frontend image", "BenchmarkCachedRebuild", "ratio", "max", 1.03, []string{"stock-ms", "buildtrace-ms", "paired-ratio"}},
	{"cached rebuild, frontend with a constant (cached) attestation vs stock: all but BuildKit storing the new attestation layer", "BenchmarkCachedRebuild", "ratio-constattest", "info", 0, []string{"constattest-ms", "attestation-layer-ms"}},
	{"stress: events/s into the daemon from concurrent traced steps", "BenchmarkStress", "events/s", "min", 500_000, []string{"seconds", "steps", "daemon-cpu-cores", "bpf-cpu-cores", "steps-cpu-cores", "host-busy-cores", "other-cpu-cores", "daemon-ns/event", "bpf-ns/event", "daemon-rss-MB", "ringbuf-highwater-KB"}},
	{"stress: events lost (dropped + truncated)", "BenchmarkStress", "events-lost", "max", 0, nil},
	{"long run: daemon RSS growth over the builds (%)", "BenchmarkLongRunRSS", "rss-growth-%", "max", 10, []string{"builds", "rss-first-MB", "rss-last-MB", "rss-max-MB", "rss-slope-KB/build", "rss-anon-first-MB", "rss-anon-last-MB", "rss-anon-slope-KB/build", "rss-file-first-MB", "rss-file-last-MB", "store-first-MB", "store-last-MB", "s/build"}},
	{"long run: anonymous RSS (heap, stacks) growth (%); the rest is file-backed (executable, mapped index)", "BenchmarkLongRunRSS", "rss-anon-growth-%", "info", 0, []string{"rss-anon-first-MB", "rss-anon-last-MB", "rss-file-first-MB", "rss-file-last-MB", "store-first-MB", "store-last-MB"}},
	{"attestation size per 10k file operations (KB)", "BenchmarkAttestation", "attest-KB/10k-fileops", "info", 0, []string{"attest-KB-0files", "attest-KB-10kfiles", "verify-ms-0files", "verify-ms-10kfiles"}},
	{"traced RUN: time added per step of a build (ms)", "BenchmarkStepsPerBuild", "added-ms/step", "info", 0, []string{"stock-ms/step", "buildtrace-ms/step", "stock-1step-s", "buildtrace-1step-s"}},
}

// micro are the per-event costs listed under the table.
var micro = []struct{ bench, what string }{
	{"BenchmarkSyscallUntracked/loaded=false", "open+close of /dev/null, no probe loaded"},
	{"BenchmarkSyscallUntracked/loaded=true", "open+close of /dev/null, untracked process, probe loaded"},
	{"BenchmarkSyscallTracked/tracked=false/abs=true", "chmod, absolute path, untracked"},
	{"BenchmarkSyscallTracked/tracked=true/abs=true", "chmod, absolute path, tracked (one event)"},
	{"BenchmarkSyscallTracked/tracked=true/abs=false", "chmod, relative path, tracked (one event + directory walk)"},
	{"BenchmarkDecodeFile", "daemon: decode one file record"},
	{"BenchmarkHandleFile", "daemon: assemble one file event into its step"},
	{"BenchmarkFromUpper", "daemon: diff walk of a 10k-file upper dir (per walk)"},
}

// result is one benchmark line: its metrics by unit.
type result struct {
	metrics map[string]float64
}

var (
	lineRE  = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)
	failRE  = regexp.MustCompile(`^\s*--- FAIL: (Benchmark\S+?)(?:-\d+)?(?:\s|$)`)
	skipRE  = regexp.MustCompile(`^\s*--- SKIP: (Benchmark\S+?)(?:-\d+)?(?:\s|$)`)
	pkgFail = regexp.MustCompile(`^FAIL\s`)
)

func parse(r io.Reader) (map[string]*result, map[string]string, error) {
	res := map[string]*result{}
	status := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if m := failRE.FindStringSubmatch(line); m != nil {
			status[m[1]] = "FAILED"
			continue
		}
		if m := skipRE.FindStringSubmatch(line); m != nil {
			status[m[1]] = "SKIPPED"
			continue
		}
		if pkgFail.MatchString(line) {
			continue
		}
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		f := strings.Fields(m[3])
		if len(f) < 2 || len(f)%2 != 0 {
			continue
		}
		r := &result{metrics: map[string]float64{}}
		ok := true
		for i := 0; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				ok = false
				break
			}
			r.metrics[f[i+1]] = v
		}
		if ok {
			res[m[1]] = r
		}
	}
	return res, status, sc.Err()
}

func format(v float64) string {
	switch a := abs(v); {
	case v == 0:
		return "0"
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

func main() {
	strict := flag.Bool("strict", false, "exit 1 when a row misses its target or did not run")
	flag.Parse()
	var in io.Reader = os.Stdin
	if flag.NArg() > 0 {
		var rs []io.Reader
		for _, name := range flag.Args() {
			f, err := os.Open(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, "benchtable:", err)
				os.Exit(2)
			}
			defer f.Close()
			rs = append(rs, f)
		}
		in = io.MultiReader(rs...)
	}
	res, status, err := parse(in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable: reading benchmark output:", err)
		os.Exit(2)
	}
	bad := false
	fmt.Println()
	fmt.Println("| work | measured | target | verdict | detail |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range rows {
		target := "-"
		switch r.cmp {
		case "max":
			target = "≤ " + format(r.target)
		case "min":
			target = "≥ " + format(r.target)
		}
		br, ok := res[r.bench]
		v, has := 0.0, false
		if ok {
			v, has = br.metrics[r.metric]
		}
		if !has {
			why := "not run"
			if s := status[r.bench]; s != "" {
				why = s
			}
			fmt.Printf("| %s | n/a | %s | %s | %s |\n", r.work, target, why, r.metric)
			if r.cmp != "info" {
				bad = true
			}
			continue
		}
		verdict := "info"
		switch {
		case r.cmp == "max" && v <= r.target, r.cmp == "min" && v >= r.target:
			verdict = "PASS"
		case r.cmp != "info":
			verdict = "FAIL"
			bad = true
		}
		if s := status[r.bench]; s != "" {
			verdict += " (benchmark " + s + ")"
			bad = true
		}
		var det []string
		for _, d := range r.detail {
			if dv, ok := br.metrics[d]; ok {
				det = append(det, d+" "+format(dv))
			} else {
				det = append(det, d+" n/a")
			}
		}
		fmt.Printf("| %s | %s %s | %s | %s | %s |\n", r.work, format(v), r.metric, target, verdict, strings.Join(det, ", "))
	}
	fmt.Println()
	fmt.Println("| per call / event (micro benchmarks) | ns/op | allocs/op |")
	fmt.Println("|---|---|---|")
	for _, m := range micro {
		br, ok := res[m.bench]
		if !ok {
			fmt.Printf("| %s | n/a | |\n", m.what)
			continue
		}
		allocs := "-"
		if a, ok := br.metrics["allocs/op"]; ok {
			allocs = strconv.FormatFloat(a, 'f', 0, 64)
		}
		fmt.Printf("| %s | %s | %s |\n", m.what, format(br.metrics["ns/op"]), allocs)
	}
	// What each BPF program cost per run under the stress load.
	if br, ok := res["BenchmarkStress"]; ok {
		var names []string
		for m := range br.metrics {
			if strings.HasPrefix(m, "bpf-") && strings.HasSuffix(m, "-ns/run") {
				names = append(names, m)
			}
		}
		sort.Strings(names)
		for _, m := range names {
			hook := strings.TrimSuffix(strings.TrimPrefix(m, "bpf-"), "-ns/run")
			fmt.Printf("| BPF %s per run, under the stress load (%s runs/s) | %s | |\n", hook, format(br.metrics["bpf-"+hook+"-runs/s"]), format(br.metrics[m]))
		}
	}
	if bad && *strict {
		os.Exit(1)
	}
}
