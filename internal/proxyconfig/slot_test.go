package proxyconfig_test

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// kubeletFormat writes annotations the way the kubelet's downward-API volume does: sorted keys,
// key=Go-quoted value, one per line.
func kubeletFormat(annotations map[string]string) []byte {
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, strconv.Quote(annotations[k]))
	}
	return []byte(b.String())
}

func TestParseAnnotationsReadsTheKubeletsFormat(t *testing.T) {
	in := map[string]string{
		"meshlift.io/active-slot": "2",
		"meshlift.io/upgrade":     `{"phase":"Swapping","to":"proxy-v2"}`,
		"note":                    "line one\nline \"two\"",
	}
	got, err := proxyconfig.ParseAnnotations(kubeletFormat(in))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(in) {
		t.Errorf("ParseAnnotations() = %v, want %v", got, in)
	}
	for _, bad := range []string{"novalue\n", `key=unquoted` + "\n", `"quoted key"="x"` + "\n", strings.Repeat("a", 300<<10)} {
		if _, err := proxyconfig.ParseAnnotations([]byte(bad)); !errors.Is(err, proxyconfig.ErrInvalid) {
			t.Errorf("ParseAnnotations(%.20q) error = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestOnlyTheActiveSlotMayOwnTheListeners(t *testing.T) {
	active2 := map[string]string{"meshlift.io/active-slot": "2"}
	tests := []struct {
		name        string
		slot        int
		annotations map[string]string
		want        bool
	}{
		{"the slot the annotation names takes over", 2, active2, true},
		{"the other slot stays idle, even after an accidental restart", 1, active2, false},
		{"no annotation: neither slot binds", 1, map[string]string{}, false},
		{"the single proxy of a cold version always owns them", 0, map[string]string{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := proxyconfig.MayOwnListeners(tt.slot, tt.annotations); got != tt.want {
				t.Errorf("MayOwnListeners(%d) = %v, want %v", tt.slot, got, tt.want)
			}
		})
	}
}

func FuzzParseAnnotations(f *testing.F) {
	f.Add(kubeletFormat(map[string]string{"meshlift.io/active-slot": "1", "x": "a\"b\\c"}))
	f.Add([]byte("k=\"\\xff\\u00e9\"\n\n=\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		annotations, err := proxyconfig.ParseAnnotations(data)
		if err != nil {
			if !errors.Is(err, proxyconfig.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// What is accepted reads back the same when written the kubelet's way.
		again, err := proxyconfig.ParseAnnotations(kubeletFormat(annotations))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(annotations) {
			t.Fatalf("round trip of %v failed: %v, %v", annotations, again, err)
		}
	})
}

func TestDrainMaxDurationFromAnnotations(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		want        time.Duration
		wantOK      bool
		wantErr     bool
	}{
		{"absent: the flag's value applies", map[string]string{}, 0, false, false},
		{"minutes", map[string]string{proxyconfig.DrainMaxDurationAnnotation: "15m"}, 15 * time.Minute, true, false},
		{"seconds", map[string]string{proxyconfig.DrainMaxDurationAnnotation: "90s"}, 90 * time.Second, true, false},
		{"not a duration is refused", map[string]string{proxyconfig.DrainMaxDurationAnnotation: "600"}, 0, false, true},
		{"under a second is refused", map[string]string{proxyconfig.DrainMaxDurationAnnotation: "500ms"}, 0, false, true},
		{"negative is refused", map[string]string{proxyconfig.DrainMaxDurationAnnotation: "-1m"}, 0, false, true},
		{"over a day is refused", map[string]string{proxyconfig.DrainMaxDurationAnnotation: "25h"}, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := proxyconfig.DrainMaxDuration(tt.annotations)
			if got != tt.want || ok != tt.wantOK || (err != nil) != tt.wantErr {
				t.Errorf("DrainMaxDuration() = %s, %v, %v; want %s, %v, error %v", got, ok, err, tt.want, tt.wantOK, tt.wantErr)
			}
			if err != nil && !errors.Is(err, proxyconfig.ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}
