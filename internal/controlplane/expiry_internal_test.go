package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

func TestNotAfterToRecord(t *testing.T) {
	notAfter := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	pod := func(uid types.UID, annotation string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", UID: uid}}
		if annotation != "" {
			p.Annotations = map[string]string{meshv1alpha1.AnnotationCertificateNotAfter: annotation}
		}
		return p
	}
	for _, tc := range []struct {
		name      string
		pod       *corev1.Pod
		leaf      issuedLeaf
		wantValue string
		wantPatch bool
	}{
		{"records the expiry on a pod that has none",
			pod("u1", ""), issuedLeaf{uid: "u1", notAfter: notAfter}, "2026-03-01T12:00:00Z", true},
		{"does not patch a pod that already shows that expiry",
			pod("u1", "2026-03-01T12:00:00Z"), issuedLeaf{uid: "u1", notAfter: notAfter}, "", false},
		{"replaces an older expiry after a rotation",
			pod("u1", "2026-02-28T12:00:00Z"), issuedLeaf{uid: "u1", notAfter: notAfter}, "2026-03-01T12:00:00Z", true},
		{"shows the newest certificate even when it expires sooner (a new CA cut it short)",
			pod("u1", "2026-03-02T12:00:00Z"), issuedLeaf{uid: "u1", notAfter: notAfter}, "2026-03-01T12:00:00Z", true},
		{"writes UTC with whole seconds",
			pod("u1", ""), issuedLeaf{uid: "u1", notAfter: notAfter.Add(700 * time.Millisecond).In(time.FixedZone("CET", 3600))}, "2026-03-01T12:00:00Z", true},
		{"leaves alone another pod of the same name",
			pod("u2", ""), issuedLeaf{uid: "u1", notAfter: notAfter}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			value, patch := notAfterToRecord(tc.pod, tc.leaf)
			if patch != tc.wantPatch || (patch && value != tc.wantValue) {
				t.Fatalf("notAfterToRecord() = %q, %v; want %q, %v", value, patch, tc.wantValue, tc.wantPatch)
			}
		})
	}
}

func TestNotAfterPatchSetsOnlyTheAnnotationOfThatPod(t *testing.T) {
	patch, err := notAfterPatch("u1", "2026-03-01T12:00:00Z")
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"metadata":{"annotations":{"meshlift.io/certificate-not-after":"2026-03-01T12:00:00Z"},"uid":"u1"}}`
	if string(patch) != want {
		t.Fatalf("patch = %s, want %s", patch, want)
	}
}

func TestExpiryPublisherCoalescesUpdatesOfAPod(t *testing.T) {
	store := newPodStore("ns/web-1")
	started, release := make(chan struct{}), make(chan struct{})
	store.beforePatch = func(n int) error {
		if n == 1 {
			close(started)
			<-release // the first patch is slow: everything else arrives meanwhile
		}
		return nil
	}
	p := startPublisher(t, store, 1000)
	key := types.NamespacedName{Namespace: "ns", Name: "web-1"}
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

	p.record(key, "uid-web-1", start)
	<-started
	// Two proxies of the pod (hot-upgrade slots) keep getting certificates.
	const updates = 1000
	for i := 1; i <= updates; i++ {
		p.record(key, "uid-web-1", start.Add(time.Duration(i)*time.Second))
	}
	close(release)

	store.waitPatches(t, 2)
	time.Sleep(300 * time.Millisecond) // nothing more may come
	want := formatNotAfter(start.Add(updates * time.Second))
	if got := store.patchCount(); got != 2 {
		t.Errorf("%d updates of one pod made %d patches, want 2 (the first, then the last)", updates+1, got)
	}
	if got := store.annotation(key); got != want {
		t.Errorf("the pod shows %q, want the last certificate's expiry %q", got, want)
	}
}

func TestExpiryPublisherPatchesAtMostWorkersPodsAtOnce(t *testing.T) {
	const pods = 40
	var names []string
	for i := range pods {
		names = append(names, fmt.Sprintf("ns/web-%d", i))
	}
	store := newPodStore(names...)
	store.beforePatch = func(int) error {
		time.Sleep(10 * time.Millisecond)
		return nil
	}
	p := startPublisher(t, store, 1000)
	notAfter := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range pods {
		p.record(types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("web-%d", i)}, types.UID(fmt.Sprintf("uid-web-%d", i)), notAfter)
	}
	store.waitPatches(t, pods)
	if most := store.mostAtOnce(); most > p.workers {
		t.Errorf("%d patches were in flight at once, want at most %d (the workers)", most, p.workers)
	}
	for _, name := range names {
		key := keyOf(name)
		if got := store.annotation(key); got != formatNotAfter(notAfter) {
			t.Errorf("pod %s shows %q", key, got)
		}
	}
}

func TestExpiryPublisherPatchesNoFasterThanItsRate(t *testing.T) {
	var names []string
	for i := range 11 {
		names = append(names, fmt.Sprintf("ns/web-%d", i))
	}
	store := newPodStore(names...)
	p := newExpiryPublisher(store, store, logr.Discard())
	p.qps, p.burst = 20, 1
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p.start(ctx)
	began := time.Now()
	for i := range 11 {
		p.record(types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("web-%d", i)}, types.UID(fmt.Sprintf("uid-web-%d", i)), began)
	}
	store.waitPatches(t, 11)
	// 1 at once, then 10 more at 20 per second.
	if elapsed := time.Since(began); elapsed < 450*time.Millisecond {
		t.Errorf("11 patches took %s, want at least 500ms at 20 patches/s", elapsed)
	}
}

func TestExpiryPublisherRetriesAFailedPatch(t *testing.T) {
	store := newPodStore("ns/web-1")
	store.beforePatch = func(n int) error {
		if n <= 2 {
			return apierrors.NewServiceUnavailable("the API server is restarting")
		}
		return nil
	}
	p := startPublisher(t, store, 1000)
	key := types.NamespacedName{Namespace: "ns", Name: "web-1"}
	notAfter := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	p.record(key, "uid-web-1", notAfter)
	store.waitPatches(t, 3)
	if got := store.annotation(key); got != formatNotAfter(notAfter) {
		t.Fatalf("the pod shows %q after two failed patches, want %q", got, formatNotAfter(notAfter))
	}
}

func TestExpiryPublisherForgetsAPodThatIsGone(t *testing.T) {
	store := newPodStore("ns/web-1")
	store.beforePatch = func(int) error {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "web-1")
	}
	p := startPublisher(t, store, 1000)
	p.record(types.NamespacedName{Namespace: "ns", Name: "web-1"}, "uid-web-1", time.Now())
	p.record(types.NamespacedName{Namespace: "ns", Name: "not-cached"}, "uid-other", time.Now())
	store.waitPatches(t, 1)
	time.Sleep(300 * time.Millisecond) // retries would come within 10ms
	if got := store.patchCount(); got != 1 {
		t.Fatalf("%d patches, want one attempt on the deleted pod and none on the pod not in the cache", got)
	}
}

// startPublisher runs a publisher on store with qps, short retries, until the test ends.
func startPublisher(t *testing.T, store *podStore, qps float32) *expiryPublisher {
	t.Helper()
	p := newExpiryPublisher(store, store, logr.Discard())
	p.qps, p.burst = qps, int(qps)
	p.retryBase, p.retryMax = 10*time.Millisecond, 10*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p.start(ctx)
	return p
}

// podStore stands in for the cache and the API server of a few pods: Get reads a pod, Patch
// applies the publisher's merge patch (annotations, with the UID as a precondition).
type podStore struct {
	client.Reader // List is not used
	client.Writer // only Patch is used

	// beforePatch runs before the nth patch (from 1) is applied; an error fails it.
	beforePatch func(n int) error

	mu          sync.Mutex
	pods        map[types.NamespacedName]*corev1.Pod
	patches     int // started
	ended       int
	patching    int
	maxPatching int
	patched     chan struct{} // a patch ended
}

// newPodStore has the pods "namespace/name", each with UID "uid-<name>".
func newPodStore(names ...string) *podStore {
	s := &podStore{pods: map[types.NamespacedName]*corev1.Pod{}, patched: make(chan struct{}, 10000)}
	for _, name := range names {
		key := keyOf(name)
		s.pods[key] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, UID: types.UID("uid-" + key.Name)}}
	}
	return s
}

func keyOf(name string) types.NamespacedName {
	namespace, name, _ := strings.Cut(name, "/")
	return types.NamespacedName{Namespace: namespace, Name: name}
}

func (s *podStore) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pod, ok := s.pods[key]
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, key.Name)
	}
	pod.DeepCopyInto(obj.(*corev1.Pod))
	return nil
}

func (s *podStore) Patch(_ context.Context, obj client.Object, patch client.Patch, _ ...client.PatchOption) error {
	s.mu.Lock()
	s.patches++
	n := s.patches
	s.patching++
	s.maxPatching = max(s.maxPatching, s.patching)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.patching--
		s.ended++
		s.mu.Unlock()
		s.patched <- struct{}{}
	}()
	if s.beforePatch != nil {
		if err := s.beforePatch(n); err != nil {
			return err
		}
	}
	if patch.Type() != types.MergePatchType {
		return fmt.Errorf("a %s patch, want a merge patch", patch.Type())
	}
	data, err := patch.Data(obj)
	if err != nil {
		return err
	}
	var merge struct {
		Metadata struct {
			UID         types.UID         `json:"uid"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &merge); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pod, ok := s.pods[client.ObjectKeyFromObject(obj)]
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, obj.GetName())
	}
	if merge.Metadata.UID != pod.UID {
		return apierrors.NewInvalid(schema.GroupKind{Kind: "Pod"}, obj.GetName(), nil)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	for k, v := range merge.Metadata.Annotations {
		pod.Annotations[k] = v
	}
	return nil
}

// waitPatches waits until n patches were attempted (and ended) in all.
func (s *podStore) waitPatches(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		ended := s.ended
		s.mu.Unlock()
		if ended >= n {
			return
		}
		select {
		case <-s.patched:
		case <-deadline:
			t.Fatalf("%d patches within 10s, want %d", ended, n)
		}
	}
}

func (s *podStore) patchCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.patches
}

func (s *podStore) mostAtOnce() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxPatching
}

func (s *podStore) annotation(key types.NamespacedName) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pods[key].Annotations[meshv1alpha1.AnnotationCertificateNotAfter]
}

// TestTheControlPlaneIgnoresItsOwnExpiryRecords: the pod update an expiry patch causes does not
// recompute endpoints; any other change does.
func TestTheControlPlaneIgnoresItsOwnExpiryRecords(t *testing.T) {
	base := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", ResourceVersion: "1",
		Annotations: map[string]string{meshv1alpha1.AnnotationMeshService: "web"}}}
	recorded := base.DeepCopy()
	recorded.ResourceVersion = "2"
	recorded.Annotations[meshv1alpha1.AnnotationCertificateNotAfter] = "2026-12-07T21:00:00Z"
	rotated := recorded.DeepCopy()
	rotated.Annotations[meshv1alpha1.AnnotationCertificateNotAfter] = "2026-12-08T09:00:00Z"
	alsoReady := rotated.DeepCopy()
	alsoReady.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	alsoExcluded := rotated.DeepCopy()
	alsoExcluded.Annotations[meshv1alpha1.AnnotationEDSExcluded] = "true"
	removed := base.DeepCopy()
	for _, tc := range []struct {
		name       string
		old, new   *corev1.Pod
		onlyExpiry bool
	}{
		{"the first record", base, recorded, true},
		{"a rotation's record", recorded, rotated, true},
		{"a record and a readiness change", recorded, alsoReady, false},
		{"a record and an EDS exclusion", recorded, alsoExcluded, false},
		{"the record removed", recorded, removed, false},
		{"no change of the record", recorded, recorded, false},
	} {
		if got := onlyCertificateExpiryChanged(tc.old, tc.new); got != tc.onlyExpiry {
			t.Errorf("%s: onlyCertificateExpiryChanged = %v, want %v", tc.name, got, tc.onlyExpiry)
		}
	}
}
