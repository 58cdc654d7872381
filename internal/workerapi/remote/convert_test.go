package remote

import (
	"reflect"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// fill sets every field of the struct v points to (recursively, through
// pointers, slices and maps) to a value that is not its zero value, so
// that a conversion that forgets a field fails the round trips below.
func fill(t *testing.T, v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Uint64, reflect.Uint8:
		if v.Type() == reflect.TypeFor[time.Duration]() {
			v.SetInt(int64(*n) * int64(time.Millisecond))
		} else if v.CanInt() {
			v.SetInt(int64(*n))
		} else {
			v.SetUint(uint64(*n))
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(t, s.Index(i), n)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(t, k, n)
		fill(t, e, n)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(t, p.Elem(), n)
		v.Set(p)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Unix(1_700_000_000, int64(*n))))
			return
		}
		for i := range v.NumField() {
			fill(t, v.Field(i), n)
		}
	default:
		t.Fatalf("fill: a field of kind %s; teach fill and the conversions about it", v.Kind())
	}
}

func filled[T any](t *testing.T) T {
	var v T
	n := 0
	fill(t, reflect.ValueOf(&v).Elem(), &n)
	return v
}

func roundTrip[T any](t *testing.T, name string, to func(T) T) {
	t.Helper()
	in := filled[T](t)
	if out := to(in); !reflect.DeepEqual(in, out) {
		t.Errorf("%s does not survive the wire:\n sent %+v\n got  %+v", name, in, out)
	}
}

// Every field of every type of the worker API crosses the wire: a field
// added to a type (function.Spec included) and not to worker.proto fails
// here.
func TestEveryFieldCrossesTheWire(t *testing.T) {
	roundTrip(t, "Info", func(v workerapi.Info) workerapi.Info { return infoFromWire(infoToWire(v)) })
	roundTrip(t, "function.Spec", func(v function.Spec) function.Spec { return specFromWire(specToWire(v)) })
	roundTrip(t, "InstanceSpec", func(v workerapi.InstanceSpec) workerapi.InstanceSpec {
		return instanceSpecFromWire(instanceSpecToWire(v))
	})
	roundTrip(t, "Instance", func(v workerapi.Instance) workerapi.Instance { return instanceFromWire(instanceToWire(v)) })
	roundTrip(t, "Result", func(v workerapi.Result) workerapi.Result { return resultFromWire(resultToWire(v)) })
	roundTrip(t, "Failure", func(v workerapi.Failure) workerapi.Failure { return *failureFromWire(failureToWire(&v)) })
	roundTrip(t, "InitError", func(v workerapi.InitError) workerapi.InitError { return *initErrorFromWire(initErrorToWire(&v)) })
	roundTrip(t, "Event", func(v workerapi.Event) workerapi.Event { return eventFromWire(eventToWire(v)) })
	roundTrip(t, "Image", func(v workerapi.Image) workerapi.Image { return imageFromWire(imageToWire(v)) })
	// The zero time stays zero (not 1970).
	if got := imageFromWire(imageToWire(workerapi.Image{})); !got.Created.IsZero() {
		t.Errorf("a zero time came back as %v", got.Created)
	}
}

// Invocation goes out as the fields of an InvokeRequest; the server
// rebuilds it in its handler.
func TestInvocationCrossesTheWire(t *testing.T) {
	inv := filled[workerapi.Invocation](t)
	req := invocationToWire("i-1", inv)
	if got := invocationFromWire(req); !reflect.DeepEqual(got, inv) {
		t.Errorf("Invocation: sent %+v, got %+v", inv, got)
	}
}
