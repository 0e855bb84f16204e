// Command pause is the pod sandbox ("pause") image of the local cluster, built from source because
// images cannot be pulled here. Without arguments it holds the pod's namespaces until SIGTERM.
// With "check-apiserver" it calls the API server through the kubernetes Service with the pod's
// service account, which is how `hack/local-cluster up` proves that pod networking, kube-proxy
// and service account tokens work.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "check-apiserver" {
		if err := checkAPIServer(); err != nil {
			fmt.Fprintln(os.Stderr, "check-apiserver:", err)
			os.Exit(1)
		}
		fmt.Println("check-apiserver: the API server answered through the kubernetes Service")
		return
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
}

func checkAPIServer() error {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return fmt.Errorf("KUBERNETES_SERVICE_HOST/PORT are not set")
	}
	caPEM, err := os.ReadFile(serviceAccountDir + "/ca.crt")
	if err != nil {
		return fmt.Errorf("no service account CA: %w", err)
	}
	token, err := os.ReadFile(serviceAccountDir + "/token")
	if err != nil {
		return fmt.Errorf("no service account token: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	url := "https://" + net.JoinHostPort(host, port) + "/api"
	var lastErr error
	for range 30 { // kube-proxy may program the Service a moment after the pod starts
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+string(token))
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		lastErr = err
		time.Sleep(time.Second)
	}
	return lastErr
}
