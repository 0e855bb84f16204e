// Package wake lets a CA backend's loop sleep on a timer and still react at once to changes of
// the objects it keeps (the built-in CA's Secret, cert-manager's CertificateRequests).
package wake

import (
	"context"

	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// OnChange starts the private cache c and sends on wake (without blocking; wake should have a
// buffer of one) whenever an object of obj's kind is added, changed or deleted. what names the
// objects in the log. If the watch cannot start (e.g. no list/watch permission) it logs why and
// the caller's loop carries on with its periodic check.
func OnChange(ctx context.Context, c cache.Cache, obj client.Object, wake chan<- struct{}, what string) {
	log := ctrl.LoggerFrom(ctx)
	send := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	informer, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
	if err == nil {
		_, err = informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { send() },
			UpdateFunc: func(any, any) { send() },
			DeleteFunc: func(any) { send() },
		})
	}
	if err != nil {
		log.Error(err, "Failed to watch; relying on the periodic check", "objects", what)
		return
	}
	go func() {
		if err := c.Start(ctx); err != nil {
			log.Error(err, "Watch stopped; relying on the periodic check", "objects", what)
		}
	}()
}
