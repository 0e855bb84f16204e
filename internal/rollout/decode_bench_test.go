package rollout_test

import (
	"testing"

	"github.com/meshlift/meshlift/internal/rollout"
)

func BenchmarkDecodeState(b *testing.B) {
	value, err := rollout.EncodeState(validState())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rollout.DecodeState(value); err != nil {
			b.Fatal(err)
		}
	}
}
