// Package function defines what a user deploys: the function spec, its
// validation rules and the stored, versioned form of a function.
package function

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/runtimes/node"
	"github.com/baton-faas/baton/internal/runtimes/provided"
	"github.com/baton-faas/baton/internal/runtimes/python"
)

// Names of the runtimes Baton ships, for callers that pick one; the list
// of runtimes is internal/runtimes' registry.
const (
	RuntimePython   = python.Name
	RuntimeNode     = node.Name
	RuntimeProvided = provided.Name
)

// Defaults applied to fields a spec leaves empty.
const (
	DefaultMemoryMB       = 128
	DefaultTimeoutSeconds = 30
	DefaultConcurrency    = 1
	DefaultMaxScale       = 10
	DefaultIdleSeconds    = 60

	MaxMemoryMB       = 10240
	MaxTimeoutSeconds = 900
	MaxConcurrency    = 1000
	MaxScaleLimit     = 1000
	MaxIdleSeconds    = 86400
	maxEnvBytes       = 64 << 10
)

// ErrInvalid marks every validation failure so the API can answer 400.
var ErrInvalid = errdefs.New(errdefs.Invalid, "invalid_spec", "invalid function spec")

// Spec is the user-supplied configuration of a function, without its code.
type Spec struct {
	Runtime            string            `json:"runtime"`
	Handler            string            `json:"handler"`
	Env                map[string]string `json:"env,omitempty"`
	MemoryMB           int               `json:"memoryMB,omitempty"`
	TimeoutSeconds     int               `json:"timeoutSeconds,omitempty"`
	Concurrency        int               `json:"concurrency,omitempty"`
	MinScale           int               `json:"minScale"`
	MaxScale           int               `json:"maxScale,omitempty"`
	IdleTimeoutSeconds int               `json:"idleTimeoutSeconds,omitempty"`
	// Autoscaler names the scaling policy: "immediate" (default) or "kpa".
	Autoscaler string `json:"autoscaler,omitempty"`
	// Idempotent says that running an event twice is harmless: an
	// invocation whose worker was lost while it ran is then run again
	// elsewhere instead of failing with worker-lost.
	Idempotent bool `json:"idempotent,omitempty"`
	// App groups functions that share one sandbox per host (default: the
	// function's own name). Functions of different apps never share one.
	App string `json:"app,omitempty"`
	// Network is "isolated" (own network namespace, loopback only) or
	// "host".
	Network string `json:"network,omitempty"`
	// Image names the root filesystem image; empty means the runtime's
	// default base image.
	Image string `json:"image,omitempty"`
	// Async configures asynchronous invocations; Normalize fills it in.
	Async *AsyncConfig `json:"async,omitempty"`
	// Prefetch records the working set of the version's first cold start
	// on a host and prefetches it on later cold starts there (absent:
	// on; false turns both off).
	Prefetch *bool `json:"prefetch,omitempty"`
}

// AsyncConfig is the wire type itself, so that specs convert to and from
// the API's without a copy.
type AsyncConfig = apiv1.AsyncConfig

// Limits and defaults of asynchronous invocations (as AWS Lambda's).
const (
	DefaultMaxRetryAttempts   = 2
	MaxRetryAttempts          = 2
	DefaultMaxEventAgeSeconds = 21600
	MinEventAgeSeconds        = 60
	MaxEventAgeSeconds        = 21600
)

// Destination kinds of AsyncConfig.OnSuccess and OnFailure.
const (
	DestinationFunction = "function"
	DestinationDLQ      = "dlq"
)

// ParseDestination splits "function:NAME" or "dlq:NAME".
func ParseDestination(d string) (kind, name string, err error) {
	kind, name, ok := strings.Cut(d, ":")
	if !ok || (kind != DestinationFunction && kind != DestinationDLQ) {
		return "", "", fmt.Errorf("%w: destination %q must be function:NAME or dlq:NAME", ErrInvalid, d)
	}
	if err := ValidateName(name); err != nil {
		return "", "", fmt.Errorf("%w: destination %q: name %q must be 1-64 characters of a-z, 0-9 and '-'", ErrInvalid, d, name)
	}
	return kind, name, nil
}

// normalizeAsync fills in the defaults of s.Async and checks it.
func (s *Spec) normalizeAsync() error {
	a := AsyncConfig{}
	if s.Async != nil {
		a = *s.Async
	}
	if a.MaxRetryAttempts == nil {
		n := DefaultMaxRetryAttempts
		a.MaxRetryAttempts = &n
	} else {
		n := *a.MaxRetryAttempts
		if n < 0 || n > MaxRetryAttempts {
			return fmt.Errorf("%w: async.maxRetryAttempts %d must be 0 to %d", ErrInvalid, n, MaxRetryAttempts)
		}
		a.MaxRetryAttempts = &n
	}
	switch {
	case a.MaxEventAgeSeconds == 0:
		a.MaxEventAgeSeconds = DefaultMaxEventAgeSeconds
	case a.MaxEventAgeSeconds < MinEventAgeSeconds || a.MaxEventAgeSeconds > MaxEventAgeSeconds:
		return fmt.Errorf("%w: async.maxEventAgeSeconds %d must be %d to %d", ErrInvalid, a.MaxEventAgeSeconds, MinEventAgeSeconds, MaxEventAgeSeconds)
	}
	for field, d := range map[string]string{"onSuccess": a.OnSuccess, "onFailure": a.OnFailure} {
		if d == "" {
			continue
		}
		if _, _, err := ParseDestination(d); err != nil {
			return fmt.Errorf("async.%s: %w", field, err)
		}
	}
	switch {
	case a.Concurrency == 0:
		a.Concurrency = max(1, s.MaxScale*s.Concurrency/2)
	case a.Concurrency < 0 || a.Concurrency > s.MaxScale*s.Concurrency:
		return fmt.Errorf("%w: async.concurrency %d must be 1 to maxScale × concurrency (%d)", ErrInvalid, a.Concurrency, s.MaxScale*s.Concurrency)
	}
	s.Async = &a
	return nil
}

// RetryAttempts is how often a failed asynchronous event is retried.
func (s Spec) RetryAttempts() int {
	if s.Async == nil || s.Async.MaxRetryAttempts == nil {
		return DefaultMaxRetryAttempts
	}
	return *s.Async.MaxRetryAttempts
}

// MaxEventAge bounds how long an asynchronous event may wait.
func (s Spec) MaxEventAge() time.Duration {
	if s.Async == nil || s.Async.MaxEventAgeSeconds == 0 {
		return DefaultMaxEventAgeSeconds * time.Second
	}
	return time.Duration(s.Async.MaxEventAgeSeconds) * time.Second
}

// AsyncConcurrency bounds the asynchronous events running at once.
func (s Spec) AsyncConcurrency() int {
	if s.Async == nil || s.Async.Concurrency <= 0 {
		return max(1, s.MaxScale*s.Concurrency/2)
	}
	return s.Async.Concurrency
}

// Network modes.
const (
	NetworkIsolated = "isolated"
	NetworkHost     = "host"
)

// Function is the stored form of a deployed function: its current version.
type Function struct {
	Name       string    `json:"name"`
	Version    int       `json:"version"`
	Spec       Spec      `json:"spec"`
	CodeDigest string    `json:"codeDigest"` // "sha256:<hex>" of the zip
	CodeSize   int64     `json:"codeSize"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// Timeout returns the function's execution limit.
func (s Spec) Timeout() time.Duration { return time.Duration(s.TimeoutSeconds) * time.Second }

// IdleTimeout returns how long an idle instance is kept.
func (s Spec) IdleTimeout() time.Duration {
	return time.Duration(s.IdleTimeoutSeconds) * time.Second
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// Handlers are "module.function" style: path segments and identifiers.
	handlerRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_./-]*$`)
	imageRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]{0,127}$`)
)

// reservedEnv are variables Baton sets for every instance; users may not
// override them because the runtime clients depend on them.
var reservedEnv = map[string]bool{
	"AWS_LAMBDA_RUNTIME_API": true, "_HANDLER": true, "LAMBDA_TASK_ROOT": true,
	"LAMBDA_RUNTIME_DIR": true, "AWS_LAMBDA_FUNCTION_NAME": true,
	"AWS_LAMBDA_FUNCTION_VERSION": true, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": true,
	"AWS_LAMBDA_LOG_STREAM_NAME": true, "AWS_LAMBDA_LOG_GROUP_NAME": true,
	"BATON_CONCURRENCY": true, "BATON_RUNTIME_SOCKET": true,
}

// ValidateName checks a function name: lower-case DNS label style, because
// names appear in URLs, NATS subjects and file names.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q must be 1-64 characters of a-z, 0-9 and '-', starting and ending with a letter or digit", ErrInvalid, name)
	}
	return nil
}

// Autoscaling policies (see internal/controlplane/autoscaler).
const (
	AutoscalerImmediate = "immediate"
	AutoscalerKPA       = "kpa"
)

// Normalize fills defaults and validates the spec. It returns a copy.
func (s Spec) Normalize() (Spec, error) {
	if s.Runtime == "" {
		return s, fmt.Errorf("%w: runtime is required (one of %s)", ErrInvalid, runtimes.NameList())
	}
	drv, err := runtimes.Get(s.Runtime)
	if err != nil {
		return s, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	s.Runtime = drv.Name() // aliases are stored under the canonical name
	if s.Handler != "" && (!handlerRE.MatchString(s.Handler) || strings.Contains(s.Handler, "..") || len(s.Handler) > 128) {
		return s, fmt.Errorf("%w: handler %q is not a valid module.function name", ErrInvalid, s.Handler)
	}
	if err := drv.ValidateHandler(s.Handler); err != nil {
		return s, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	envSize := 0
	for k, v := range s.Env {
		if !envKeyRE.MatchString(k) {
			return s, fmt.Errorf("%w: environment variable name %q is not valid", ErrInvalid, k)
		}
		if reservedEnv[k] {
			return s, fmt.Errorf("%w: environment variable %q is reserved by Baton", ErrInvalid, k)
		}
		if strings.ContainsRune(v, 0) {
			return s, fmt.Errorf("%w: environment variable %q contains a NUL byte", ErrInvalid, k)
		}
		envSize += len(k) + len(v)
	}
	if envSize > maxEnvBytes {
		return s, fmt.Errorf("%w: environment is %d bytes, limit is %d", ErrInvalid, envSize, maxEnvBytes)
	}
	if err := defaultRange(&s.MemoryMB, "memoryMB", DefaultMemoryMB, 16, MaxMemoryMB); err != nil {
		return s, err
	}
	if err := defaultRange(&s.TimeoutSeconds, "timeoutSeconds", DefaultTimeoutSeconds, 1, MaxTimeoutSeconds); err != nil {
		return s, err
	}
	if err := defaultRange(&s.Concurrency, "concurrency", DefaultConcurrency, 1, MaxConcurrency); err != nil {
		return s, err
	}
	if s.Concurrency > drv.MaxConcurrency() {
		if drv.MaxConcurrency() == 1 {
			return s, fmt.Errorf("%w: concurrency %d needs runtime %s; %s instances serve one event at a time (Baton scales them by adding instances)", ErrInvalid, s.Concurrency, strings.Join(runtimes.Concurrent(), " or "), s.Runtime)
		}
		return s, fmt.Errorf("%w: concurrency %d is above runtime %s's limit of %d", ErrInvalid, s.Concurrency, s.Runtime, drv.MaxConcurrency())
	}
	if err := defaultRange(&s.MaxScale, "maxScale", DefaultMaxScale, 1, MaxScaleLimit); err != nil {
		return s, err
	}
	if s.MinScale < 0 || s.MinScale > s.MaxScale {
		return s, fmt.Errorf("%w: minScale %d must be between 0 and maxScale (%d)", ErrInvalid, s.MinScale, s.MaxScale)
	}
	if err := defaultRange(&s.IdleTimeoutSeconds, "idleTimeoutSeconds", DefaultIdleSeconds, 1, MaxIdleSeconds); err != nil {
		return s, err
	}
	switch s.Autoscaler {
	case "":
		s.Autoscaler = AutoscalerImmediate
	case AutoscalerImmediate, AutoscalerKPA:
	default:
		return s, fmt.Errorf("%w: autoscaler %q must be %s or %s", ErrInvalid, s.Autoscaler, AutoscalerImmediate, AutoscalerKPA)
	}
	switch s.Network {
	case "":
		s.Network = NetworkIsolated
	case NetworkIsolated, NetworkHost:
	default:
		return s, fmt.Errorf("%w: network %q must be %s or %s", ErrInvalid, s.Network, NetworkIsolated, NetworkHost)
	}
	if s.App != "" && !nameRE.MatchString(s.App) {
		return s, fmt.Errorf("%w: app %q must be 1-64 characters of a-z, 0-9 and '-', starting and ending with a letter or digit", ErrInvalid, s.App)
	}
	if s.Image != "" && !imageRE.MatchString(s.Image) {
		return s, fmt.Errorf("%w: image %q is not a valid image name (lower-case letters, digits and . _ - / :, at most 128 characters)", ErrInvalid, s.Image)
	}
	if err := s.normalizeAsync(); err != nil {
		return s, err
	}
	if s.Prefetch == nil {
		on := true
		s.Prefetch = &on
	} else {
		on := *s.Prefetch // a copy: the caller's pointer is not shared
		s.Prefetch = &on
	}
	return s, nil
}

// PrefetchOn says whether the function's cold starts record and prefetch
// their working set (the default).
func (s Spec) PrefetchOn() bool { return s.Prefetch == nil || *s.Prefetch }

// AppOf returns the application a function belongs to.
func AppOf(name string, s Spec) string {
	if s.App != "" {
		return s.App
	}
	return name
}

func defaultRange(v *int, field string, def, lo, hi int) error {
	if *v == 0 {
		*v = def
	}
	if *v < lo || *v > hi {
		return fmt.Errorf("%w: %s %d is out of range [%d, %d]", ErrInvalid, field, *v, lo, hi)
	}
	return nil
}

// InstanceEqual reports whether two normalized specs produce identical
// instances. A redeploy that changes only scaling settings keeps the version
// (and the running instances); anything else makes a new version.
func (s Spec) InstanceEqual(o Spec) bool {
	if s.Runtime != o.Runtime || s.Handler != o.Handler || s.MemoryMB != o.MemoryMB ||
		s.TimeoutSeconds != o.TimeoutSeconds || s.Concurrency != o.Concurrency ||
		s.App != o.App || s.Network != o.Network || s.Image != o.Image ||
		len(s.Env) != len(o.Env) {
		return false
	}
	for k, v := range s.Env {
		if ov, ok := o.Env[k]; !ok || ov != v {
			return false
		}
	}
	return true
}

// EnvList renders env as sorted KEY=VALUE pairs.
func EnvList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// ARN is the invoked-function ARN Baton hands to runtimes.
func ARN(name string, version int) string {
	return fmt.Sprintf("arn:baton:lambda:local:000000000000:function:%s:%d", name, version)
}
