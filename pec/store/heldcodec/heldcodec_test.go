package heldcodec

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// fill sets every exported field of the struct v points to (recursively) to a non-zero
// value, except the named ones.
func fill(t *testing.T, v reflect.Value, skip map[string]bool, n *int) {
	t.Helper()
	typ := v.Type()
	for i := 0; i < v.NumField(); i++ {
		f, sf := v.Field(i), typ.Field(i)
		if !sf.IsExported() || skip[typ.Name()+"."+sf.Name] {
			continue
		}
		*n++
		switch {
		case sf.Type == reflect.TypeOf(time.Time{}):
			f.Set(reflect.ValueOf(time.Unix(1_700_000_000, int64(*n)).UTC()))
		case sf.Type == reflect.TypeOf(time.Duration(0)):
			f.SetInt(int64(*n) * int64(time.Second))
		case f.Kind() == reflect.String:
			f.SetString(fmt.Sprintf("v%d", *n))
		case f.Kind() == reflect.Int64 || f.Kind() == reflect.Int:
			f.SetInt(int64(*n))
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.Uint8:
			f.SetBytes([]byte{byte(*n), 0, 255})
		case f.Kind() == reflect.Slice:
			s := reflect.MakeSlice(sf.Type, 2, 2)
			for j := 0; j < 2; j++ {
				if s.Index(j).Kind() == reflect.Struct {
					fill(t, s.Index(j), skip, n)
				} else {
					s.Index(j).SetString(fmt.Sprintf("e%d.%d", *n, j))
				}
			}
			f.Set(s)
		case f.Kind() == reflect.Struct:
			fill(t, f, skip, n)
		default:
			t.Fatalf("fill: %s.%s of kind %s: teach fill (and the held codec) about it", typ.Name(), sf.Name, f.Kind())
		}
	}
}

// TestHeldCodecCoversEveryField: every field a caller sets in a Batch survives the stored
// form of OnConfirm / OnExpiry. A field added to a store type without adding it to the wire
// types (and a new codec version, if the shape changes) fails here.
func TestHeldCodecCoversEveryField(t *testing.T) {
	// Set by the store at Commit, never by the caller; and a held record's batches hold no
	// held records and no delivery marks.
	skip := map[string]bool{"Batch.Holds": true, "Batch.Deliveries": true, "Event.Seq": true, "OutboxItem.ID": true, "OutboxItem.State": true,
		"OutboxItem.Attempts": true, "OutboxItem.NextAttempt": true, "OutboxItem.LastError": true,
		"OutboxItem.ClaimedBy": true, "OutboxItem.LeaseUntil": true, "OutboxItem.SentAt": true, "QuarantineItem.ID": true}
	var b store.Batch
	n := 0
	fill(t, reflect.ValueOf(&b).Elem(), skip, &n)
	data, err := Encode(&b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Errorf("round trip lost data:\n got %+v\nwant %+v\nstored %s", got, b, data)
	}
	if e, _ := Decode(nil); !e.Empty() {
		t.Error("nil is not the empty batch")
	}
	if d, _ := Encode(&store.Batch{}); d != nil {
		t.Errorf("empty batch stored as %q", d)
	}
	if _, err := Decode([]byte(`{"v":2,"events":[]}`)); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("unknown version: %v", err)
	}
}
