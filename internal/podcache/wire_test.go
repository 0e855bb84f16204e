package podcache

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
	"testing/iotest"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	restclientwatch "k8s.io/client-go/rest/watch"

	"github.com/meshlift/meshlift/internal/testutil/gen"
)

var podSerializer = protobuf.NewSerializer(clientgoscheme.Scheme, clientgoscheme.Scheme)

// encode encodes obj as the API server does, with its kind.
func encode(t testing.TB, obj runtime.Object) []byte {
	t.Helper()
	if obj.GetObjectKind().GroupVersionKind().Empty() {
		kinds, _, err := clientgoscheme.Scheme.ObjectKinds(obj)
		if err != nil {
			t.Fatal(err)
		}
		obj = obj.DeepCopyObject()
		obj.GetObjectKind().SetGroupVersionKind(kinds[0])
	}
	var b bytes.Buffer
	if err := podSerializer.Encode(obj, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func decode(t testing.TB, data []byte) runtime.Object {
	t.Helper()
	obj, _, err := podSerializer.Decode(data, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// filterFixtures are pods as the API server sends them: full ones of both sidecar layouts, a
// bare one and one without a status.
func filterFixtures(t testing.TB) map[string]*corev1.Pod {
	t.Helper()
	native := fullPod(t)
	regular := fullPod(t)
	regular.Spec.Containers = append(regular.Spec.Containers, regular.Spec.InitContainers[:2]...)
	regular.Spec.InitContainers = regular.Spec.InitContainers[2:]
	regular.Status.ContainerStatuses = append(regular.Status.ContainerStatuses, regular.Status.InitContainerStatuses[:2]...)
	regular.Status.InitContainerStatuses = regular.Status.InitContainerStatuses[2:]
	pending := fullPod(t)
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	return map[string]*corev1.Pod{
		"native sidecars": native, "regular sidecars": regular, "pending": pending, "bare": gen.Pod("bare"),
	}
}

func slimmed(pod *corev1.Pod) *corev1.Pod {
	out := pod.DeepCopy()
	Slim(out)
	return out
}

func TestFilteredPodsDecodeToWhatSlimKeeps(t *testing.T) {
	for name, pod := range filterFixtures(t) {
		t.Run(name, func(t *testing.T) {
			original := encode(t, pod)
			filtered, err := filterObject(nil, original)
			if err != nil {
				t.Fatal(err)
			}
			got := decode(t, filtered).(*corev1.Pod)
			if want := slimmed(pod); !equality.Semantic.DeepEqual(slimmed(got), want) {
				t.Errorf("slimmed, the filtered pod is\n%+v\nwant\n%+v", slimmed(got), want)
			}
			if name == "bare" {
				return
			}
			if len(filtered) >= len(original)/2 {
				t.Errorf("the filter kept %d of %d bytes", len(filtered), len(original))
			}
			if got.ManagedFields != nil || got.Spec.Volumes != nil || got.Spec.Tolerations != nil || got.Status.HostIPs != nil {
				t.Error("the filtered pod has managed fields, volumes, tolerations or host IPs")
			}
		})
	}
}

func TestFilteredPodListsDecodeToWhatSlimKeeps(t *testing.T) {
	fixtures := filterFixtures(t)
	list := &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "42", Continue: "next"}}
	for _, name := range []string{"native sidecars", "regular sidecars", "bare"} {
		list.Items = append(list.Items, *fixtures[name])
	}
	filtered, err := filterObject(nil, encode(t, list))
	if err != nil {
		t.Fatal(err)
	}
	got := decode(t, filtered).(*corev1.PodList)
	if got.ResourceVersion != "42" || got.Continue != "next" || len(got.Items) != len(list.Items) {
		t.Fatalf("got list metadata %+v and %d pods, want %+v and %d", got.ListMeta, len(got.Items), list.ListMeta, len(list.Items))
	}
	for i := range list.Items {
		want := slimmed(&list.Items[i])
		want.TypeMeta = metav1.TypeMeta{} // the items of a list have no kind
		if !equality.Semantic.DeepEqual(slimmed(&got.Items[i]), want) {
			t.Errorf("pod %d: slimmed, the filtered pod differs from the original", i)
		}
	}
}

func TestFilterLeavesOtherObjectsAlone(t *testing.T) {
	for _, obj := range []runtime.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}, Data: map[string]string{"a": "b"}},
		&metav1.Status{Status: metav1.StatusFailure, Message: "too old resource version", Code: 410},
	} {
		original := encode(t, obj)
		if filtered, err := filterObject(nil, original); err != nil || !bytes.Equal(filtered, original) {
			t.Errorf("%T: filtered to %q, %v; want it unchanged", obj, filtered, err)
		}
	}
}

// watchStream encodes events as the API server streams a watch in protobuf.
func watchStream(t *testing.T, events ...watch.Event) []byte {
	t.Helper()
	info, ok := runtime.SerializerInfoForMediaType(serializer.NewCodecFactory(clientgoscheme.Scheme).SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	if !ok {
		t.Fatal("no protobuf serializer")
	}
	var stream bytes.Buffer
	encoder := streaming.NewEncoder(info.StreamSerializer.Framer.NewFrameWriter(&stream), info.StreamSerializer.Serializer)
	for _, e := range events {
		if err := encoder.Encode(&metav1.WatchEvent{Type: string(e.Type), Object: runtime.RawExtension{Raw: encode(t, e.Object)}}); err != nil {
			t.Fatal(err)
		}
	}
	return stream.Bytes()
}

// decodeWatch decodes a watch stream as client-go does.
func decodeWatch(t *testing.T, body io.ReadCloser) ([]watch.Event, error) {
	t.Helper()
	info, _ := runtime.SerializerInfoForMediaType(serializer.NewCodecFactory(clientgoscheme.Scheme).SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	frames := info.StreamSerializer.Framer.NewFrameReader(body)
	decoder := restclientwatch.NewDecoder(streaming.NewDecoder(frames, info.StreamSerializer.Serializer), podSerializer)
	var events []watch.Event
	for {
		typ, obj, err := decoder.Decode()
		if err != nil {
			return events, err
		}
		events = append(events, watch.Event{Type: typ, Object: obj})
	}
}

func TestWatchFilterFiltersEveryPodOfTheStream(t *testing.T) {
	fixtures := filterFixtures(t)
	bookmark := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{ResourceVersion: "42", Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}}
	status := &metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}, Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired}
	events := []watch.Event{
		{Type: watch.Added, Object: fixtures["native sidecars"]},
		{Type: watch.Modified, Object: fixtures["regular sidecars"]},
		{Type: watch.Bookmark, Object: bookmark},
		{Type: watch.Deleted, Object: fixtures["bare"]},
		{Type: watch.Error, Object: status},
	}
	stream := watchStream(t, events...)
	filter := &watchFilter{body: io.NopCloser(iotest.OneByteReader(bytes.NewReader(stream)))}
	got, err := decodeWatch(t, filter)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("the stream ended with %v, want EOF", err)
	}
	if len(got) != len(events) {
		t.Fatalf("got %d events, want %d", len(got), len(events))
	}
	for i, e := range events {
		want := e.Object
		if pod, ok := want.(*corev1.Pod); ok && e.Type != watch.Bookmark { // bookmarks come unchanged
			want = slimmed(pod)
			if pod, ok := got[i].Object.(*corev1.Pod); ok {
				got[i].Object = slimmed(pod)
			}
		}
		if got[i].Type != e.Type || !equality.Semantic.DeepEqual(got[i].Object, want) {
			t.Errorf("event %d: got %s %+v, want %s %+v", i, got[i].Type, got[i].Object, e.Type, want)
		}
	}
	if filtered, _ := io.ReadAll(&watchFilter{body: io.NopCloser(bytes.NewReader(stream))}); len(filtered) >= len(stream)/2 {
		t.Errorf("the filter kept %d of %d bytes", len(filtered), len(stream))
	}
}

func TestWatchFilterReportsATruncatedStream(t *testing.T) {
	stream := watchStream(t, watch.Event{Type: watch.Added, Object: fullPod(t)})
	for _, cut := range []int{2, 4, len(stream) - 1} {
		_, err := io.ReadAll(&watchFilter{body: io.NopCloser(bytes.NewReader(stream[:cut]))})
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut after %d bytes: got %v, want an unexpected EOF", cut, err)
		}
	}
}

type cannedTransport struct {
	contentType string
	body        []byte
}

func (c cannedTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {c.contentType}},
		Body: io.NopCloser(bytes.NewReader(c.body)), ContentLength: int64(len(c.body))}, nil
}

func TestFilterTransportFiltersOnlyPodListsAndWatches(t *testing.T) {
	pod := fullPod(t)
	list := encode(t, &corev1.PodList{Items: []corev1.Pod{*pod}})
	stream := watchStream(t, watch.Event{Type: watch.Added, Object: pod})
	for _, tc := range []struct {
		name, method, url, contentType string
		body                           []byte
		filtered                       bool
	}{
		{"a list of the cluster's pods", http.MethodGet, "https://api/api/v1/pods?limit=500", "application/vnd.kubernetes.protobuf", list, true},
		{"a list of a namespace's pods", http.MethodGet, "https://api/api/v1/namespaces/shop/pods", "application/vnd.kubernetes.protobuf", list, true},
		{"a watch of pods", http.MethodGet, "https://api/api/v1/pods?watch=true", "application/vnd.kubernetes.protobuf;stream=watch", stream, true},
		{"one pod", http.MethodGet, "https://api/api/v1/namespaces/shop/pods/web-1", "application/vnd.kubernetes.protobuf", encode(t, pod), false},
		{"a pod's subresource", http.MethodGet, "https://api/api/v1/namespaces/shop/pods/web-1/status", "application/vnd.kubernetes.protobuf", encode(t, pod), false},
		{"pods in JSON", http.MethodGet, "https://api/api/v1/pods", "application/json", []byte(`{"kind":"PodList"}`), false},
		{"a write", http.MethodPost, "https://api/api/v1/namespaces/shop/pods", "application/vnd.kubernetes.protobuf", encode(t, pod), false},
		{"another resource", http.MethodGet, "https://api/api/v1/configmaps", "application/vnd.kubernetes.protobuf", list, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := FilterTransport(cannedTransport{contentType: tc.contentType, body: tc.body}).RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if filtered := !bytes.Equal(body, tc.body); filtered != tc.filtered {
				t.Errorf("filtered: %t, want %t", filtered, tc.filtered)
			}
			if res.ContentLength >= 0 && res.ContentLength != int64(len(body)) {
				t.Errorf("Content-Length %d for a body of %d bytes", res.ContentLength, len(body))
			}
		})
	}
}

func TestIsPodCollection(t *testing.T) {
	for path, want := range map[string]bool{
		"/api/v1/pods": true, "/api/v1/namespaces/shop/pods": true,
		"/api/v1/namespaces/shop/pods/web-1": false, "/api/v1/namespaces//pods": false, "/api/v1/namespaces/a/b/pods": false,
		"/api/v1/podtemplates": false, "/apis/metrics.k8s.io/v1beta1/pods": false, "/api/v1/nodes": false,
	} {
		if got := isPodCollection(path); got != want {
			t.Errorf("isPodCollection(%q) = %t, want %t", path, got, want)
		}
	}
}
