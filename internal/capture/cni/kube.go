package cni

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	if conf.Kubeconfig == "" {
		return nil, errors.New(`the network configuration has no "kubeconfig"; set it to a kubeconfig that may get pods`)
	}
	config, err := clientcmd.BuildConfigFromFlags("", conf.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("failed to load kubeconfig %s: %w", conf.Kubeconfig, err)
	}
	return NewKubeLookupForConfig(config)
}

// NewKubeLookupForConfig is NewKubeLookup with a REST configuration.
func NewKubeLookupForConfig(config *rest.Config) (PodLookup, error) {
	config = rest.CopyConfig(config)
	config.Timeout = requestTimeout
	config.UserAgent = PluginName
	client, err := corev1client.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("failed to create a Kubernetes client: %w", err)
	}
	return kubeLookup{client: client}, nil
}

type kubeLookup struct {
	client corev1client.CoreV1Interface
}

func (k kubeLookup) Pod(ctx context.Context, namespace, name string) (Pod, error) {
	delay := retryDelay
	var err error
	for attempt := 1; ; attempt++ {
		var pod Pod
		if pod, err = k.get(ctx, namespace, name); err == nil {
			return pod, nil
		}
		if attempt == lookupAttempts || !retriable(err) {
			return Pod{}, err
		}
		select {
		case <-ctx.Done():
			return Pod{}, fmt.Errorf("%w (gave up after %d attempts: %w)", err, attempt, ctx.Err())
		case <-time.After(delay):
			delay *= 2
		}
	}
}

func (k kubeLookup) get(ctx context.Context, namespace, name string) (Pod, error) {
	pod, err := k.client.Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return Pod{}, err
	}
	return Pod{UID: string(pod.UID), Annotations: pod.Annotations}, nil
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
