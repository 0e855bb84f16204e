package cni

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Bounds of one pod lookup: each request may take requestTimeout, and a failed request is tried
// again after retryDelay (doubling) up to lookupAttempts times, within the caller's deadline.
const (
	requestTimeout = 3 * time.Second
	retryDelay     = 250 * time.Millisecond
	lookupAttempts = 3
)

// NewKubeLookup is the plugin's PodLookup: a GET of the pod with the kubeconfig of the
// configuration, with short timeouts and a few retries for transient errors.
func NewKubeLookup(conf *NetConf) (PodLookup, error) {
	return newKubeLookup(conf)
}

// NewKubeMeshServiceLookup is the plugin's MeshServiceLookup: a list of the MeshServices of the
// pod's namespace, with NewKubeLookup's client, timeouts and retries.
func NewKubeMeshServiceLookup(conf *NetConf) (MeshServiceLookup, error) {
	return newKubeLookup(conf)
}

func newKubeLookup(conf *NetConf) (kubeLookup, error) {
	if conf.Kubeconfig == "" {
		return kubeLookup{}, errors.New(`the network configuration has no "kubeconfig"; set it to a kubeconfig that may get pods`)
	}
	config, err := clientcmd.BuildConfigFromFlags("", conf.Kubeconfig)
	if err != nil {
		return kubeLookup{}, fmt.Errorf("failed to load kubeconfig %s: %w", conf.Kubeconfig, err)
	}
	return newKubeLookupForConfig(config)
}

// NewKubeLookupForConfig is NewKubeLookup with a REST configuration.
func NewKubeLookupForConfig(config *rest.Config) (PodLookup, error) {
	return newKubeLookupForConfig(config)
}

// NewKubeMeshServiceLookupForConfig is NewKubeMeshServiceLookup with a REST configuration.
func NewKubeMeshServiceLookupForConfig(config *rest.Config) (MeshServiceLookup, error) {
	return newKubeLookupForConfig(config)
}

func newKubeLookupForConfig(config *rest.Config) (kubeLookup, error) {
	config = rest.CopyConfig(config)
	config.Timeout = requestTimeout
	config.UserAgent = PluginName
	client, err := corev1client.NewForConfig(config)
	if err != nil {
		return kubeLookup{}, fmt.Errorf("failed to create a Kubernetes client: %w", err)
	}
	return kubeLookup{client: client}, nil
}

type kubeLookup struct {
	client corev1client.CoreV1Interface
}

func (k kubeLookup) Pod(ctx context.Context, namespace, name string) (Pod, error) {
	var pod Pod
	err := withRetries(ctx, func() (err error) {
		pod, err = k.get(ctx, namespace, name)
		return err
	})
	return pod, err
}

func (k kubeLookup) get(ctx context.Context, namespace, name string) (Pod, error) {
	pod, err := k.client.Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return Pod{}, err
	}
	var containers []string
	var proxyUID *int64
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			containers = append(containers, list[i].Name)
			if proxyUID == nil && slices.Contains(proxyContainers, list[i].Name) && list[i].SecurityContext != nil {
				proxyUID = list[i].SecurityContext.RunAsUser
			}
		}
	}
	return Pod{
		UID: string(pod.UID), Annotations: pod.Annotations, Labels: pod.Labels,
		Injected: carriesSidecar(pod.Annotations, containers), ProxyUID: proxyUID,
	}, nil
}

// MeshServices lists the MeshServices of namespace, with the pod GET's timeouts and retries. A
// NotFound error means the API server does not serve MeshServices (the CRD is not installed).
func (k kubeLookup) MeshServices(ctx context.Context, namespace string) ([]MeshService, error) {
	var meshServices []MeshService
	err := withRetries(ctx, func() error {
		data, err := k.client.RESTClient().Get().
			AbsPath("/apis", meshServiceGroup, meshServiceVersion, "namespaces", namespace, meshServiceResource).
			Do(ctx).Raw()
		if err != nil {
			return err
		}
		meshServices, err = DecodeMeshServiceList(data)
		return err
	})
	return meshServices, err
}

// withRetries calls request until it succeeds, fails with an error another try would not change,
// or has been tried lookupAttempts times, waiting retryDelay (doubling) in between, within ctx.
func withRetries(ctx context.Context, request func() error) error {
	delay := retryDelay
	for attempt := 1; ; attempt++ {
		err := request()
		if err == nil {
			return nil
		}
		if attempt == lookupAttempts || !retriable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up after %d attempts: %w)", err, attempt, ctx.Err())
		case <-time.After(delay):
			delay *= 2
		}
	}
}

// retriable tells transient failures (timeouts, connection errors, 5xx, throttling) from
// answers that another try would not change.
func retriable(err error) bool {
	switch {
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err), apierrors.IsUnauthorized(err),
		apierrors.IsBadRequest(err), apierrors.IsInvalid(err):
		return false
	case errors.Is(err, context.Canceled):
		return false
	}
	return true
}
