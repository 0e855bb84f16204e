package podcache

import (
	"bytes"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// FuzzFilterObject checks the protobuf filter against its reference, Slim: whatever the bytes,
// the filter does not panic, and an object that decodes still decodes once filtered, to a pod
// (or to pods) that Slim makes equal to the original's, or to the same bytes when it is not a
// pod. An error makes the transport pass the original: nothing to compare then.
func FuzzFilterObject(f *testing.F) {
	for _, pod := range filterFixtures(f) {
		f.Add(encode(f, pod))
	}
	f.Add(encode(f, &corev1.PodList{Items: []corev1.Pod{*fullPod(f), {}}}))
	f.Add(encode(f, &corev1.ConfigMap{Data: map[string]string{"a": "b"}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		filtered, err := filterObject(nil, data)
		if err != nil {
			return
		}
		original, _, err := podSerializer.Decode(data, nil, nil)
		if err != nil {
			return
		}
		got, _, err := podSerializer.Decode(filtered, nil, nil)
		if err != nil {
			t.Fatalf("the original decodes to a %T, the filtered object does not decode: %v", original, err)
		}
		switch want := original.(type) {
		case *corev1.Pod:
			if !equality.Semantic.DeepEqual(slimmed(got.(*corev1.Pod)), slimmed(want)) {
				t.Fatalf("slimmed, the filtered pod\n%+v\ndiffers from the original\n%+v", slimmed(got.(*corev1.Pod)), slimmed(want))
			}
		case *corev1.PodList:
			list := got.(*corev1.PodList)
			if len(list.Items) != len(want.Items) || !equality.Semantic.DeepEqual(list.ListMeta, want.ListMeta) {
				t.Fatalf("the filtered list has %d pods and %+v, want %d and %+v", len(list.Items), list.ListMeta, len(want.Items), want.ListMeta)
			}
			for i := range want.Items {
				if !equality.Semantic.DeepEqual(slimmed(&list.Items[i]), slimmed(&want.Items[i])) {
					t.Fatalf("pod %d of the list: slimmed, the filtered pod differs from the original", i)
				}
			}
		default:
			if !bytes.Equal(filtered, data) {
				t.Fatalf("a %T was changed", original)
			}
		}
	})
}
