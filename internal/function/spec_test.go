package function

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNormalizeDefaults(t *testing.T) {
	s, err := Spec{Runtime: RuntimePython, Handler: "app.handler"}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if s.MemoryMB != DefaultMemoryMB || s.TimeoutSeconds != DefaultTimeoutSeconds || s.Concurrency != 1 ||
		s.MaxScale != DefaultMaxScale || s.IdleTimeoutSeconds != DefaultIdleSeconds || s.MinScale != 0 ||
		s.Autoscaler != AutoscalerImmediate {
		t.Fatalf("defaults not applied: %+v", s)
	}
}

func TestNormalizeRejects(t *testing.T) {
	cases := map[string]struct {
		spec Spec
		want string
	}{
		"unknown runtime":      {Spec{Runtime: "ruby", Handler: "a.b"}, `unknown runtime "ruby"`},
		"missing runtime":      {Spec{Handler: "a.b"}, "runtime is required"},
		"missing handler":      {Spec{Runtime: RuntimePython}, "handler is required"},
		"handler without dot":  {Spec{Runtime: RuntimeNode, Handler: "index"}, "FILE.FUNCTION"},
		"handler traversal":    {Spec{Runtime: RuntimePython, Handler: "../x.y"}, "not a valid"},
		"memory too large":     {Spec{Runtime: RuntimePython, Handler: "a.b", MemoryMB: 99999}, "memoryMB 99999 is out of range"},
		"negative timeout":     {Spec{Runtime: RuntimePython, Handler: "a.b", TimeoutSeconds: -1}, "timeoutSeconds"},
		"python concurrency":   {Spec{Runtime: RuntimePython, Handler: "a.b", Concurrency: 4}, "concurrency 4 needs runtime nodejs"},
		"min above max":        {Spec{Runtime: RuntimePython, Handler: "a.b", MinScale: 5, MaxScale: 2}, "minScale 5"},
		"reserved env":         {Spec{Runtime: RuntimePython, Handler: "a.b", Env: map[string]string{"_HANDLER": "x"}}, "reserved"},
		"bad env name":         {Spec{Runtime: RuntimePython, Handler: "a.b", Env: map[string]string{"1X": "x"}}, "not valid"},
		"negative idle":        {Spec{Runtime: RuntimePython, Handler: "a.b", IdleTimeoutSeconds: -5}, "idleTimeoutSeconds"},
		"max scale over limit": {Spec{Runtime: RuntimePython, Handler: "a.b", MaxScale: 100000}, "maxScale"},
		"unknown autoscaler":   {Spec{Runtime: RuntimePython, Handler: "a.b", Autoscaler: "hpa"}, `autoscaler "hpa" must be immediate or kpa`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := c.spec.Normalize()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, c.want)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "hello", "my-func-2", strings.Repeat("a", 64)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Hello", "-a", "a-", "a_b", "../x", "a.b", strings.Repeat("a", 65)} {
		if err := ValidateName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestInstanceEqual(t *testing.T) {
	a, _ := Spec{Runtime: RuntimePython, Handler: "a.b", Env: map[string]string{"K": "1"}}.Normalize()
	b := a
	b.MaxScale = 99
	if !a.InstanceEqual(b) {
		t.Fatal("a scaling-only change must keep the version")
	}
	c := a
	c.Env = map[string]string{"K": "2"}
	if a.InstanceEqual(c) {
		t.Fatal("an env change must make a new version")
	}
}

func TestAppNetworkImage(t *testing.T) {
	s, err := Spec{Runtime: RuntimePython, Handler: "a.b"}.Normalize()
	if err != nil || s.Network != NetworkIsolated || AppOf("f", s) != "f" {
		t.Fatalf("defaults: %+v %v", s, err)
	}
	s, err = Spec{Runtime: RuntimePython, Handler: "a.b", App: "shop", Network: "host", Image: "python:3.11-slim"}.Normalize()
	if err != nil || AppOf("f", s) != "shop" {
		t.Fatalf("explicit: %+v %v", s, err)
	}
	for _, bad := range []Spec{
		{Runtime: RuntimePython, Handler: "a.b", Network: "bridge"},
		{Runtime: RuntimePython, Handler: "a.b", App: "Shop"},
		{Runtime: RuntimePython, Handler: "a.b", Image: "UPPER"},
	} {
		if _, err := bad.Normalize(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v accepted", bad)
		}
	}
	a, _ := Spec{Runtime: RuntimePython, Handler: "a.b"}.Normalize()
	b := a
	b.App = "other"
	if a.InstanceEqual(b) {
		t.Fatal("moving a function to another app must make a new version")
	}
}

func TestNormalizeRuntimeFromRegistry(t *testing.T) {
	s, err := Spec{Runtime: "node", Handler: "index.handler"}.Normalize()
	if err != nil || s.Runtime != RuntimeNode {
		t.Fatalf("alias node: %+v, %v; want runtime %s", s.Runtime, err, RuntimeNode)
	}
	_, err = Spec{Runtime: "cobol", Handler: "a.b"}.Normalize()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "python3, nodejs or provided") {
		t.Fatalf("unknown runtime: %v", err)
	}
	if _, err := (Spec{Runtime: RuntimeProvided}).Normalize(); err != nil {
		t.Fatalf("provided without handler: %v", err)
	}
}

func TestAsyncConfigDefaultsAndLimits(t *testing.T) {
	base := Spec{Runtime: RuntimePython, Handler: "app.handler", MaxScale: 8}
	s, err := base.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if s.RetryAttempts() != 2 || s.MaxEventAge() != 6*time.Hour || s.AsyncConcurrency() != 4 {
		t.Fatalf("defaults: retries %d, age %s, concurrency %d", s.RetryAttempts(), s.MaxEventAge(), s.AsyncConcurrency())
	}
	zero := 0
	s, err = Spec{Runtime: RuntimePython, Handler: "app.handler", Async: &AsyncConfig{MaxRetryAttempts: &zero}}.Normalize()
	if err != nil || s.RetryAttempts() != 0 {
		t.Fatalf("explicit 0 retries: %d, %v", s.RetryAttempts(), err)
	}
	three, minus := 3, -1
	for _, bad := range []*AsyncConfig{
		{MaxRetryAttempts: &three}, {MaxRetryAttempts: &minus}, {MaxEventAgeSeconds: 59}, {MaxEventAgeSeconds: 21601},
		{OnSuccess: "queue:x"}, {OnFailure: "dlq:"}, {OnFailure: "function:Bad_Name"}, {OnSuccess: "dlq"}, {Concurrency: -1},
		{Concurrency: 1000},
	} {
		spec := base
		spec.Async = bad
		if _, err := spec.Normalize(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "async") && !strings.Contains(err.Error(), "destination") {
			t.Errorf("async %+v: %v, want an invalid-spec error naming the field", *bad, err)
		}
	}
	for _, good := range []string{"function:next", "dlq:failed-orders"} {
		spec := base
		spec.Async = &AsyncConfig{OnSuccess: good, OnFailure: good}
		if _, err := spec.Normalize(); err != nil {
			t.Errorf("destination %s: %v", good, err)
		}
	}
}

// prefetch is on unless a spec says false; a value that is not a boolean
// is refused when the spec is decoded, naming the field.
func TestPrefetch(t *testing.T) {
	s, err := Spec{Runtime: RuntimePython, Handler: "app.handler"}.Normalize()
	if err != nil || s.Prefetch == nil || !*s.Prefetch || !s.PrefetchOn() {
		t.Fatalf("default: %v %v, want prefetch true", s.Prefetch, err)
	}
	off := false
	in := Spec{Runtime: RuntimePython, Handler: "app.handler", Prefetch: &off}
	s, err = in.Normalize()
	if err != nil || s.PrefetchOn() || s.Prefetch == in.Prefetch {
		t.Fatalf("false: %v %v, want prefetch false in a copy", s.Prefetch, err)
	}
	if (Spec{}).PrefetchOn() != true {
		t.Fatal("a stored spec without the field must mean on")
	}
	var bad Spec
	err = json.Unmarshal([]byte(`{"runtime":"python","handler":"app.handler","prefetch":"no"}`), &bad)
	if err == nil || !strings.Contains(err.Error(), "prefetch") {
		t.Fatalf("prefetch \"no\": %v, want an error naming prefetch", err)
	}
}
