package trace

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	miniDir = "testdata/azure-mini"
	invName = "invocations_per_function_md.anon.d01.csv"
	durName = "function_durations_percentiles.anon.d01.csv"
	memName = "app_memory_percentiles.anon.d01.csv"
)

func loadMini(t *testing.T) *Trace {
	t.Helper()
	tr, err := Load(miniDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func points(qs []float64, vs ...float64) []Point {
	p := make([]Point, len(vs))
	for i, v := range vs {
		p[i] = Point{qs[i], v}
	}
	return p
}

// The golden values come from the generator's fixed rows (function 0, app 0)
// and from reading the generated CSV by eye; the ID was computed outside Go.
func TestLoadMini(t *testing.T) {
	tr := loadMini(t)
	if tr.Minutes != 1440 || tr.Day != "d01" || len(tr.Functions) != 30 {
		t.Fatalf("Minutes=%d Day=%q functions=%d, want 1440 d01 30", tr.Minutes, tr.Day, len(tr.Functions))
	}
	f := tr.Functions[0]
	if f.ID != "d703364a31eb" || f.ID != FunctionID(f.Owner, f.App, f.Name) {
		t.Errorf("ID = %s, want d703364a31eb", f.ID)
	}
	if !strings.HasPrefix(f.Owner, "63290322e46d") || !strings.HasPrefix(f.App, "eb8d271e8001") ||
		!strings.HasPrefix(f.Name, "baf56d28ba37") || f.Trigger != "http" {
		t.Errorf("identity = %.12s %.12s %.12s %s", f.Owner, f.App, f.Name, f.Trigger)
	}
	if len(f.PerMinute) != 1440 || f.Total != 432431 {
		t.Errorf("len(PerMinute)=%d Total=%d, want 1440 432431", len(f.PerMinute), f.Total)
	}
	for m, want := range map[int]int{0: 238, 1: 238, 720: 432, 1439: 215} {
		if f.PerMinute[m] != want {
			t.Errorf("PerMinute[%d] = %d, want %d", m, f.PerMinute[m], want)
		}
	}
	wantDur := Percentiles{Average: 152.25, Points: points(durationQs, 3, 8, 45, 98, 170, 950, 4200)}
	if !f.HasDuration || !reflect.DeepEqual(f.Duration, wantDur) {
		t.Errorf("Duration = %+v (has %v), want %+v", f.Duration, f.HasDuration, wantDur)
	}
	wantMem := Percentiles{Average: 128.5, Points: points(memoryQs, 96, 101, 113, 124, 139, 168, 191, 212)}
	if !f.HasMemory || !reflect.DeepEqual(f.MemoryMB, wantMem) {
		t.Errorf("MemoryMB = %+v (has %v), want %+v", f.MemoryMB, f.HasMemory, wantMem)
	}
	// Same app, same memory.
	if !reflect.DeepEqual(tr.Functions[1].MemoryMB, wantMem) {
		t.Errorf("function 1 of app 0 has memory %+v", tr.Functions[1].MemoryMB)
	}

	// Function 7's p75 (27) is below its p50 (31): running max.
	want7 := points(durationQs, 12, 14, 20, 31, 31, 60, 130)
	if got := tr.Functions[7].Duration.Points; !reflect.DeepEqual(got, want7) {
		t.Errorf("function 7 points = %v, want %v", got, want7)
	}
	for i, f := range tr.Functions {
		noDur := i == 15 || i == 17 || i == 29 // no row; Count=0 twice
		if f.HasDuration == noDur {
			t.Errorf("function %d: HasDuration = %v", i, f.HasDuration)
		}
		if !f.HasDuration && !reflect.DeepEqual(f.Duration, Percentiles{}) {
			t.Errorf("function %d: Duration = %+v without HasDuration", i, f.Duration)
		}
		noMem := f.App == tr.Functions[21].App // app 7 has no memory row
		if f.HasMemory == noMem {
			t.Errorf("function %d: HasMemory = %v", i, f.HasMemory)
		}
		if !f.HasMemory && !reflect.DeepEqual(f.MemoryMB, Percentiles{}) {
			t.Errorf("function %d: MemoryMB = %+v without HasMemory", i, f.MemoryMB)
		}
		for _, p := range [][]Point{f.Duration.Points, f.MemoryMB.Points} {
			if !slices.IsSortedFunc(p, func(a, b Point) int {
				if a.Q < b.Q || a.V < b.V {
					return -1
				}
				return 0
			}) {
				t.Errorf("function %d: points not monotone: %v", i, p)
			}
		}
	}
	wantWarn := []string{
		"1 duration rows ignored: their functions are not loaded",
		"1 memory rows ignored: their apps have no loaded function",
		"1 rows had decreasing percentiles, made monotone",
	}
	if !reflect.DeepEqual(tr.Warnings, wantWarn) {
		t.Errorf("Warnings = %q, want %q", tr.Warnings, wantWarn)
	}
}

// The counts agree with a naive parse of the file, for every function.
func TestLoadMatchesNaiveParse(t *testing.T) {
	tr := loadMini(t)
	data, err := os.ReadFile(filepath.Join(miniDir, invName))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")[1:]
	if len(lines) != len(tr.Functions) {
		t.Fatalf("%d lines, %d functions", len(lines), len(tr.Functions))
	}
	for i, line := range lines {
		fields := strings.Split(line, ",")
		f := tr.Functions[i]
		if f.Name != fields[2] || f.Trigger != fields[3] {
			t.Fatalf("function %d is %s, line has %s", i, f.Name, fields[2])
		}
		var total int64
		for m, s := range fields[4:] {
			v, _ := strconv.Atoi(s)
			if f.PerMinute[m] != v {
				t.Fatalf("function %d minute %d: %d, want %d", i, m, f.PerMinute[m], v)
			}
			total += int64(v)
		}
		if f.Total != total {
			t.Errorf("function %d: Total = %d, want %d", i, f.Total, total)
		}
	}
}

// readCSV and writeCSV are deliberately naive: the fixtures have no quotes.
func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		rows = append(rows, strings.Split(l, ","))
	}
	return rows
}

func writeCSV(t *testing.T, path string, rows [][]string) {
	t.Helper()
	var b strings.Builder
	for _, r := range rows {
		b.WriteString(strings.Join(r, ",") + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestColumnOrderIndependence(t *testing.T) {
	want := loadMini(t)
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(7, 7))
	for _, name := range []string{invName, durName, memName} {
		rows := readCSV(t, filepath.Join(miniDir, name))
		// Shuffle the columns and add unknown ones, also between the minutes.
		perm := r.Perm(len(rows[0]) + 2)
		out := make([][]string, len(rows))
		for i, row := range rows {
			row = append(slices.Clone(row), "x", "y")
			if i == 0 {
				row[len(row)-2], row[len(row)-1] = "Extra", "0"
			}
			for _, j := range perm {
				out[i] = append(out[i], row[j])
			}
		}
		writeCSV(t, filepath.Join(dir, name), out)
	}
	// "0" is no minute column; "x" in it must not be parsed.
	got, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Error("trace with shuffled columns differs")
	}
}

// A tiny valid day of three minutes that the malformed cases break.
var (
	tinyInv = "HashOwner,HashApp,HashFunction,Trigger,1,2,3\n" +
		"o1,a1,f1,http,1,0,2\n" +
		"o1,a1,f2,timer,0,1,0\n"
	tinyDur = "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,percentile_Average_1," +
		"percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100\n" +
		"o1,a1,f1,10,3,1,50,1,2,5,8,12,40,50\n" +
		"o1,a1,f2,20,1,20,20,20,20,20,20,20,20,20\n"
	tinyMem = "HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,AverageAllocatedMb_pct5," +
		"AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,AverageAllocatedMb_pct75,AverageAllocatedMb_pct95," +
		"AverageAllocatedMb_pct99,AverageAllocatedMb_pct100\n" +
		"o1,a1,5,100,80,85,90,100,110,120,130,140\n"
)

func writeDay(t *testing.T, dir, day, inv, dur, mem string) {
	t.Helper()
	for name, content := range map[string]string{
		"invocations_per_function_md.anon." + day + ".csv":    inv,
		"function_durations_percentiles.anon." + day + ".csv": dur,
		"app_memory_percentiles.anon." + day + ".csv":         mem,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadTiny(t *testing.T) {
	dir := t.TempDir()
	writeDay(t, dir, "d01", tinyInv, tinyDur, tinyMem)
	tr, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Minutes != 3 || len(tr.Functions) != 2 || len(tr.Warnings) != 0 {
		t.Fatalf("Minutes=%d functions=%d warnings=%q", tr.Minutes, len(tr.Functions), tr.Warnings)
	}
	if f := tr.Functions[0]; !slices.Equal(f.PerMinute, []int{1, 0, 2}) || f.Total != 3 || f.Duration.Points[3] != (Point{.5, 8}) {
		t.Errorf("f1 = %+v", f)
	}
}

func TestMalformed(t *testing.T) {
	cases := []struct {
		name    string
		file    string // the file replaced by content
		content string
		want    string
	}{
		{name: "missing function column", file: invName, content: replace(t, tinyInv, "HashFunction", "HashFunc"),
			want: invName + `:1: column "HashFunction": missing from header`},
		{name: "missing trigger column", file: invName, content: replace(t, tinyInv, "Trigger", "Kind"),
			want: invName + `:1: column "Trigger": missing from header`},
		{name: "missing minute column", file: invName, content: replace(t, tinyInv, ",2,3", ",3,4"),
			want: invName + `:1: column "2": missing from header (minute columns must be 1..3)`},
		{name: "no minute columns", file: invName, content: "HashOwner,HashApp,HashFunction,Trigger\no,a,f,http\n",
			want: invName + `:1: no minute columns`},
		{name: "duplicate column", file: invName, content: replace(t, tinyInv, "Trigger", "HashApp"),
			want: invName + `:1: column "HashApp": duplicate column in header`},
		{name: "missing duration column", file: durName, content: replace(t, tinyDur, "percentile_Average_50", "p50"),
			want: durName + `:1: column "percentile_Average_50": missing from header`},
		{name: "missing memory column", file: memName, content: replace(t, tinyMem, "AverageAllocatedMb_pct95", "pct95"),
			want: memName + `:1: column "AverageAllocatedMb_pct95": missing from header`},
		{name: "non-numeric count", file: invName, content: replace(t, tinyInv, "timer,0,1,0", "timer,0,x,0"),
			want: invName + `:3: column "2": invalid count "x"`},
		{name: "fractional count", file: invName, content: replace(t, tinyInv, "timer,0,1,0", "timer,0,1,0.5"),
			want: invName + `:3: column "3": invalid count "0.5"`},
		{name: "empty count", file: invName, content: replace(t, tinyInv, "http,1,0,2", "http,,0,2"),
			want: invName + `:2: column "1": invalid count ""`},
		{name: "negative count", file: invName, content: replace(t, tinyInv, "http,1,0,2", "http,1,-4,2"),
			want: invName + `:2: column "2": negative count -4`},
		{name: "too few fields", file: invName, content: replace(t, tinyInv, "timer,0,1,0", "timer,0,1"),
			want: invName + `:3: wrong number of fields: got 6, header has 7`},
		{name: "too many fields", file: memName, content: tinyMem + "o2,a2,1,1,1,1,1,1,1,1,1,1,1\n",
			want: memName + `:3: wrong number of fields: got 13, header has 12`},
		{name: "empty identifier", file: invName, content: replace(t, tinyInv, "o1,a1,f2", "o1,a1,"),
			want: invName + `:3: column "HashFunction": empty value`},
		{name: "empty invocation file", file: invName, content: "", want: invName + `: empty file`},
		{name: "empty duration file", file: durName, content: "", want: durName + `: empty file`},
		{name: "empty memory file", file: memName, content: "", want: memName + `: empty file`},
		{name: "header only", file: invName, content: strings.SplitAfter(tinyInv, "\n")[0], want: invName + `: no data rows`},
		{name: "negative duration", file: durName, content: replace(t, tinyDur, "1,2,5,8", "1,2,-5,8"),
			want: durName + `:2: column "percentile_Average_25": negative value -5`},
		{name: "non-numeric duration", file: durName, content: replace(t, tinyDur, "20,20,20\n", "20,20,abc\n"),
			want: durName + `:3: column "percentile_Average_100": invalid number "abc"`},
		{name: "NaN duration", file: durName, content: replace(t, tinyDur, "o1,a1,f1,10", "o1,a1,f1,NaN"),
			want: durName + `:2: column "Average": invalid number "NaN"`},
		{name: "negative duration count", file: durName, content: replace(t, tinyDur, "f2,20,1", "f2,20,-1"),
			want: durName + `:3: column "Count": negative value -1`},
		{name: "bad memory value", file: memName, content: replace(t, tinyMem, "110,120", "110,1e"),
			want: memName + `:2: column "AverageAllocatedMb_pct95": invalid number "1e"`},
		// Rows of functions that are not loaded are validated too.
		{name: "bad row of unknown function", file: durName, content: tinyDur + "o9,a9,f9,1,1,1,1,1,1,1,1,1,1,-1\n",
			want: durName + `:4: column "percentile_Average_100": negative value -1`},
		{name: "bare quote", file: invName, content: replace(t, tinyInv, "f2", `f"2`),
			want: invName + `:3: bare " in non-quoted-field`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeDay(t, dir, "d01", tinyInv, tinyDur, tinyMem)
			if err := os.WriteFile(filepath.Join(dir, c.file), []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			tr, err := Load(dir, Options{})
			if err == nil {
				t.Fatalf("no error; trace %+v", tr)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("error %T is no *ParseError", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error = %q\nwant it to contain %q", err, c.want)
			}
		})
	}
}

func TestDuplicates(t *testing.T) {
	dir := t.TempDir()
	inv := tinyInv + "o1,a1,f1,http,10,20,30\n"
	dur := tinyDur + "o1,a1,f1,99,9,9,9,9,9,9,9,9,9,9\n"
	mem := tinyMem + "o1,a1,5,1,1,1,1,1,1,1,1,1\n"
	writeDay(t, dir, "d01", inv, dur, mem)
	tr, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := tr.Functions[0]
	if len(tr.Functions) != 2 || !slices.Equal(f.PerMinute, []int{11, 20, 32}) || f.Total != 63 {
		t.Errorf("functions=%d PerMinute=%v Total=%d, want 2 [11 20 32] 63", len(tr.Functions), f.PerMinute, f.Total)
	}
	if f.Duration.Average != 10 || f.MemoryMB.Average != 100 {
		t.Errorf("later duplicate rows won: duration avg %v, memory avg %v", f.Duration.Average, f.MemoryMB.Average)
	}
	want := []string{
		invName + ":4: duplicate invocation row for function " + f.ID + ": counts summed",
		durName + ":4: duplicate duration row for function " + f.ID + ": first row kept",
		memName + ":3: duplicate memory row for app a1: first row kept",
	}
	if !reflect.DeepEqual(tr.Warnings, want) {
		t.Errorf("Warnings = %q\nwant %q", tr.Warnings, want)
	}
}

func TestWarningsCapped(t *testing.T) {
	dir := t.TempDir()
	inv := tinyInv + strings.Repeat("o1,a1,f2,timer,1,1,1\n", 50)
	writeDay(t, dir, "d01", inv, tinyDur, tinyMem)
	tr, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Functions[1].PerMinute; !slices.Equal(got, []int{50, 51, 50}) {
		t.Errorf("PerMinute = %v", got)
	}
	if len(tr.Warnings) != maxWarnings+1 || tr.Warnings[maxWarnings] != "30 more warnings not shown" {
		t.Errorf("%d warnings, last %q", len(tr.Warnings), tr.Warnings[len(tr.Warnings)-1])
	}
}

func TestCountZeroAndMissingRows(t *testing.T) {
	dir := t.TempDir()
	inv := tinyInv + "o2,a2,f3,queue,0,0,5\n"
	dur := replace(t, tinyDur, "f2,20,1,", "f2,20,0,")
	mem := replace(t, tinyMem, "o1,a1,5,", "o1,a1,0,")
	writeDay(t, dir, "d01", inv, dur, mem)
	tr, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range tr.Functions {
		if f.HasMemory || !reflect.DeepEqual(f.MemoryMB, Percentiles{}) {
			t.Errorf("function %d has memory with SampleCount=0 or no row", i)
		}
		if f.HasDuration != (i == 0) {
			t.Errorf("function %d: HasDuration = %v", i, f.HasDuration)
		}
	}
}

func replace(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("fixture lacks %q", old)
	}
	return strings.Replace(s, old, new, 1)
}

func TestMaxFunctions(t *testing.T) {
	tr, err := Load(miniDir, Options{MaxFunctions: 5})
	if err != nil {
		t.Fatal(err)
	}
	all := loadMini(t)
	if !reflect.DeepEqual(tr.Functions, all.Functions[:5]) {
		t.Error("MaxFunctions=5 does not keep the first five functions unchanged")
	}
	if !slices.Contains(tr.Warnings, "25 functions beyond MaxFunctions skipped") {
		t.Errorf("Warnings = %q", tr.Warnings)
	}

	// Rows beyond the cap are still validated.
	dir := t.TempDir()
	writeDay(t, dir, "d01", tinyInv+"o3,a3,f3,http,1,y,1\n", tinyDur, tinyMem)
	if _, err := Load(dir, Options{MaxFunctions: 1}); err == nil || !strings.Contains(err.Error(), `invalid count "y"`) {
		t.Errorf("err = %v", err)
	}
	if _, err := Load(miniDir, Options{MaxFunctions: -1}); err == nil {
		t.Error("negative MaxFunctions accepted")
	}
}

func TestDaySelection(t *testing.T) {
	dir := t.TempDir()
	writeDay(t, dir, "d01", tinyInv, tinyDur, tinyMem)
	writeDay(t, dir, "d02", tinyInv+"o2,a2,f3,queue,0,0,5\n", tinyDur, tinyMem)
	if err := os.WriteFile(filepath.Join(dir, "README.txt"), []byte("not a trace"), 0o644); err != nil {
		t.Fatal(err)
	}

	_, err := Load(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "holds several days (d01, d02): choose one (baton replay --day)") {
		t.Errorf("no day: err = %v", err)
	}
	for day, n := range map[string]int{"d01": 2, "d02": 3} {
		tr, err := Load(dir, Options{Day: day})
		if err != nil {
			t.Fatal(err)
		}
		if tr.Day != day || len(tr.Functions) != n {
			t.Errorf("Day %s: got day %q with %d functions, want %d", day, tr.Day, len(tr.Functions), n)
		}
	}
	_, err = Load(dir, Options{Day: "d05"})
	want := fmt.Sprintf(`no *invocations_per_function_md*.csv file for day "d05" in %s (found: %s, %s)`, dir,
		"invocations_per_function_md.anon.d01.csv", "invocations_per_function_md.anon.d02.csv")
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("d05: err = %v\nwant %s", err, want)
	}

	// A day without a memory file (as some public days are) loads with a
	// warning; a day without durations does not load.
	if err := os.Remove(filepath.Join(dir, "app_memory_percentiles.anon.d02.csv")); err != nil {
		t.Fatal(err)
	}
	tr, err := Load(dir, Options{Day: "d02"})
	if err != nil {
		t.Fatalf("missing memory for d02: %v", err)
	}
	if len(tr.Warnings) == 0 || !strings.Contains(strings.Join(tr.Warnings, "\n"), "default memory") {
		t.Errorf("missing memory for d02: warnings %v", tr.Warnings)
	}
	for _, f := range tr.Functions {
		if f.HasMemory {
			t.Errorf("function %s has memory without a memory file", f.ID)
		}
	}
	if err := os.Remove(filepath.Join(dir, "function_durations_percentiles.anon.d02.csv")); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir, Options{Day: "d02"})
	if err == nil || !strings.Contains(err.Error(), `no *function_durations_percentiles*.csv file for day "d02"`) ||
		!strings.Contains(err.Error(), "found: function_durations_percentiles.anon.d01.csv") {
		t.Errorf("missing durations for d02: err = %v", err)
	}

	// Two candidates for one day.
	if err := os.WriteFile(filepath.Join(dir, "copy.function_durations_percentiles.anon.d01.csv"), []byte(tinyDur), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir, Options{Day: "d01"})
	if err == nil || !strings.Contains(err.Error(), "several *function_durations_percentiles*.csv files for day \"d01\"") {
		t.Errorf("two duration files: err = %v", err)
	}
}

func TestMissingFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "no *invocations_per_function_md*.csv file in") {
		t.Errorf("empty dir: err = %v", err)
	}
	writeDay(t, dir, "d01", tinyInv, tinyDur, tinyMem)
	if err := os.Remove(filepath.Join(dir, durName)); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "no *function_durations_percentiles*.csv file in") {
		t.Errorf("no durations: err = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "nope"), Options{}); err == nil {
		t.Error("missing directory accepted")
	}
}

func TestUndatedFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"invocations_per_function_md.csv":    tinyInv,
		"function_durations_percentiles.csv": tinyDur,
		"app_memory_percentiles.csv":         "\ufeff" + tinyMem, // with a byte order mark
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Day != "" || len(tr.Functions) != 2 || !tr.Functions[0].HasMemory {
		t.Errorf("Day=%q functions=%d", tr.Day, len(tr.Functions))
	}
}

func TestDayOf(t *testing.T) {
	for name, want := range map[string]string{
		"invocations_per_function_md.anon.d01.csv":  "d01",
		"invocations_per_function_md.anon.d14.csv":  "d14",
		"app_memory_percentiles.anon.d3.csv":        "d3",
		"function_durations_percentiles.d02-x.csv":  "d02",
		"invocations_per_function_md.anon.csv":      "",
		"invocations_per_function_md.anon.dx01.csv": "",
	} {
		if got := dayOf(name); got != want {
			t.Errorf("dayOf(%s) = %q, want %q", name, got, want)
		}
	}
}
