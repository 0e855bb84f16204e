// Package fuzz fuzzes the webhooks' HTTP handlers. It is a package of its own so that fuzz
// workers do not start the envtest API server of the webhooks package's TestMain.
package fuzz

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/webhooks"
)

// FuzzPodInjector sends arbitrary bodies to the injector's HTTP endpoint, the way the API server
// (or anything that reaches the port) would. The handler must never panic and must answer every
// request with an AdmissionReview or a clear HTTP error.
//
// The reader is controller-runtime's fake client on purpose: fuzzing needs thousands of requests
// per second, and the injector only reads; the envtest suite covers the same handler with the
// real API server and the real cache.
func FuzzPodInjector(f *testing.F) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1alpha1.AddToScheme(scheme))
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		gen.SidecarVersion("proxy-v1", "1.0.0", gen.AsDefault()),
		gen.MeshService("web"),
	).Build()
	handler := &webhook.Admission{Handler: &webhooks.PodInjector{Reader: reader, Options: sidecar.DefaultOptions(), OperatorNamespace: "meshlift-system"}}

	review := func(kind string, object string) []byte {
		return []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"` +
			kind + `"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"default","operation":"CREATE","object":` + object + `}}`)
	}
	pod := `{"metadata":{"generateName":"web-","labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"web:1"}]}}`
	f.Add(review("Pod", pod))
	f.Add(review("Pod", `{"metadata":{"labels":{"app":"web"},"annotations":{"meshlift.io/inject":"false"}},"spec":{}}`))
	f.Add(review("Pod", `{"spec":{"hostNetwork":true,"containers":[{"ports":[{"containerPort":15000}]}]}}`))
	f.Add(review("Deployment", pod))
	f.Add(review("Pod", `"not an object"`))
	f.Add(review("Pod", `{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"web"}],"initContainers":null,"volumes":[{"name":"meshlift-run"}]}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`))
	f.Add([]byte(`{"request":null}`))
	f.Add([]byte(`{{{`))
	f.Add([]byte(``))
	f.Add(review("Pod", `{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[`+strings.Repeat(`{"name":"c","image":"i"},`, 500)+`{"name":"last"}]}}`))

	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, webhooks.PodInjectorPath, bytes.NewReader(body)).WithContext(context.Background())
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)

		if rec.Code != http.StatusOK {
			if rec.Body.Len() == 0 {
				t.Fatalf("HTTP %d without a message", rec.Code)
			}
			return
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("the answer is not an AdmissionReview (%v): %s", err, rec.Body.String())
		}
		if !out.Response.Allowed {
			// Only undecodable requests are answered with an error, and it says what is wrong.
			if out.Response.Result == nil || out.Response.Result.Message == "" {
				t.Fatalf("a refused request carries no message: %s", rec.Body.String())
			}
		}
		if len(out.Response.Patch) > 0 {
			checkAdditive(t, body, out.Response.Patch)
		}
	})
}

// checkAdditive checks that a patch only adds and applies to the pod of the request (decoded as
// the webhook server decodes it), as the API server will apply it.
func checkAdditive(t *testing.T, body, patch []byte) {
	t.Helper()
	in := unversionedReview{}
	in.SetGroupVersionKind(admissionv1.SchemeGroupVersion.WithKind("AdmissionReview"))
	if _, _, err := admissionCodecs.UniversalDeserializer().Decode(body, nil, &in); err != nil || in.Request == nil {
		t.Fatalf("a request that was answered with a patch does not decode (%v)", err)
	}
	var ops []struct {
		Op   string `json:"op"`
		Path string `json:"path"`
	}
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatalf("the patch is not a list of operations: %v", err)
	}
	for _, op := range ops {
		if op.Op != "add" {
			t.Fatalf("the patch has a %s operation on %s; the injector only adds", op.Op, op.Path)
		}
	}
	decoded, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("the patch is not a valid JSON patch: %v", err)
	}
	if _, err := decoded.Apply(in.Request.Object.Raw); err != nil {
		t.Fatalf("the patch does not apply to the pod: %v\npatch: %s\npod: %s", err, patch, in.Request.Object.Raw)
	}
}

// admissionCodecs and unversionedReview decode AdmissionReviews (v1 or v1beta1) the way
// controller-runtime's webhook server does.
var admissionCodecs = func() serializer.CodecFactory {
	scheme := runtime.NewScheme()
	utilruntime.Must(admissionv1.AddToScheme(scheme))
	utilruntime.Must(admissionv1beta1.AddToScheme(scheme))
	return serializer.NewCodecFactory(scheme)
}()

type unversionedReview struct {
	admissionv1.AdmissionReview
}
