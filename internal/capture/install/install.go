// Package install puts meshlift-cni into a node's CNI configuration, as the meshlift-cni
// DaemonSet's installer does on every node: it copies the plugin binary into the CNI binary
// directory, writes the kubeconfig the plugin reads pods with (the DaemonSet's service-account
// token, rewritten when the token rotates), and appends the plugin to the chain of the node's
// CNI configuration list (the file the container runtime uses: the first *.conflist or *.conf of
// the directory in lexical order). Everything it writes is written to a temporary file and
// renamed, so the runtime never reads half a file. Uninstall takes the plugin out of the chain
// and removes the binary and the kubeconfig: the node is left as it was found.
//
// The chain is edited as JSON with every field the installer does not own kept as it is; the
// plugin's entry is recognised by its "type" and is replaced, never duplicated.
package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// PluginType is the plugin's "type" in a CNI configuration (cni.PluginName).
const PluginType = "meshlift-cni"

// KubeconfigName is the kubeconfig the installer writes into the CNI configuration directory.
const KubeconfigName = "meshlift-cni.kubeconfig"

// Options say where things go on the node.
type Options struct {
	// BinDir is the node's CNI binary directory (as the container runtime's bin_dir).
	BinDir string
	// ConfDir is the node's CNI configuration directory (as the runtime's conf_dir), where the
	// installer sees it; HostConfDir is the same directory as the node sees it (the plugin's
	// entry names its kubeconfig by that path), ConfDir when empty.
	ConfDir, HostConfDir string
	// Binary is the plugin binary to copy (in the installer's image).
	Binary string
	// APIServer is the URL the plugin reaches the API server at (https://host:port).
	APIServer string
	// CAFile and TokenFile are the DaemonSet's service-account CA bundle and token.
	CAFile, TokenFile string
	// ExcludeNamespaces is the plugin's excludeNamespaces (nil: the plugin's default).
	ExcludeNamespaces []string
}

// Install copies the binary, writes the kubeconfig and chains the plugin. It is idempotent; it
// reports whether it changed the configuration list.
func Install(opts Options) (chained bool, err error) {
	if err := copyFile(opts.Binary, filepath.Join(opts.BinDir, PluginType), 0o755); err != nil {
		return false, fmt.Errorf("failed to install the plugin binary into %s: %w", opts.BinDir, err)
	}
	kubeconfig, err := Kubeconfig(opts)
	if err != nil {
		return false, err
	}
	if err := writeIfChanged(filepath.Join(opts.ConfDir, KubeconfigName), kubeconfig, 0o600); err != nil {
		return false, fmt.Errorf("failed to write the plugin's kubeconfig: %w", err)
	}
	path, err := ConfFile(opts.ConfDir)
	if err != nil {
		return false, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("failed to read the CNI configuration %s: %w", path, err)
	}
	out, changed, err := Chain(data, filepath.Ext(path) != ".conflist", Entry(opts))
	if err != nil {
		return false, fmt.Errorf("failed to chain %s into %s: %w", PluginType, path, err)
	}
	if !changed {
		return false, nil
	}
	// A single-plugin .conf becomes a .conflist of the same name: the runtime prefers neither,
	// and the lexical order (which picks the file) stays the same only with the same stem.
	target := strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
	if err := writeIfChanged(target, out, 0o644); err != nil {
		return false, fmt.Errorf("failed to write the CNI configuration %s: %w", target, err)
	}
	if target != path {
		if err := os.Remove(path); err != nil {
			return false, fmt.Errorf("failed to replace %s with %s: %w", path, target, err)
		}
	}
	return true, nil
}

// Uninstall takes the plugin out of the chain and removes the binary and the kubeconfig.
func Uninstall(opts Options) error {
	var errs []error
	if path, err := ConfFile(opts.ConfDir); err == nil {
		if data, err := os.ReadFile(path); err == nil {
			out, changed, err := Unchain(data)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("failed to take %s out of %s: %w", PluginType, path, err))
			case changed:
				if err := writeIfChanged(path, out, 0o644); err != nil {
					errs = append(errs, fmt.Errorf("failed to write the CNI configuration %s: %w", path, err))
				}
			}
		}
	}
	for _, path := range []string{filepath.Join(opts.ConfDir, KubeconfigName), filepath.Join(opts.BinDir, PluginType)} {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Entry is the plugin's entry in the chain.
func Entry(opts Options) map[string]any {
	hostDir := opts.HostConfDir
	if hostDir == "" {
		hostDir = opts.ConfDir
	}
	entry := map[string]any{"type": PluginType, "kubeconfig": filepath.Join(hostDir, KubeconfigName)}
	if opts.ExcludeNamespaces != nil {
		entry["excludeNamespaces"] = opts.ExcludeNamespaces
	}
	return entry
}

// ConfFile is the configuration the container runtime uses: the first *.conflist, *.conf or
// *.json of dir in lexical order (what containerd's and the kubelet's CNI loaders pick).
func ConfFile(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("failed to read the CNI configuration directory %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".conflist", ".conf", ".json":
			if !e.IsDir() {
				names = append(names, e.Name())
			}
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no CNI configuration in %s: the node's network plugin must be installed first (meshlift-cni is chained after it)", dir)
	}
	slices.Sort(names)
	return filepath.Join(dir, names[0]), nil
}

// Chain returns the configuration list with entry as the last plugin, replacing an entry of the
// same type; single is set for a single-plugin configuration (.conf), which becomes a list.
// changed is false when data already has exactly that entry last.
func Chain(data []byte, single bool, entry map[string]any) (out []byte, changed bool, err error) {
	list, err := decode(data, single)
	if err != nil {
		return nil, false, err
	}
	plugins, err := pluginsOf(list)
	if err != nil {
		return nil, false, err
	}
	kept := make([]any, 0, len(plugins)+1)
	for _, p := range plugins {
		if typeOf(p) != PluginType {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		return nil, false, errors.New("the configuration has no network plugin to chain after")
	}
	list["plugins"] = append(kept, entry)
	out, err = encode(list)
	if err != nil {
		return nil, false, err
	}
	if !single {
		if same, _ := equalJSON(data, out); same {
			return data, false, nil
		}
	}
	return out, true, nil
}

// Unchain returns the configuration list without the plugin's entry.
func Unchain(data []byte) (out []byte, changed bool, err error) {
	list, err := decode(data, false)
	if err != nil {
		return nil, false, err
	}
	plugins, err := pluginsOf(list)
	if err != nil {
		return nil, false, err
	}
	kept := slices.DeleteFunc(slices.Clone(plugins), func(p any) bool { return typeOf(p) == PluginType })
	if len(kept) == len(plugins) {
		return data, false, nil
	}
	list["plugins"] = kept
	out, err = encode(list)
	return out, err == nil, err
}

func decode(data []byte, single bool) (map[string]any, error) {
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("the CNI configuration is not a JSON object: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("the CNI configuration has data after its JSON object")
	}
	if !single {
		return obj, nil
	}
	if _, ok := obj["plugins"]; ok {
		return obj, nil // a list in a .conf file
	}
	// A single plugin: its name and cniVersion move to the list.
	list := map[string]any{"name": obj["name"], "cniVersion": obj["cniVersion"]}
	plugin := map[string]any{}
	for k, v := range obj {
		if k != "name" && k != "cniVersion" {
			plugin[k] = v
		}
	}
	list["plugins"] = []any{plugin}
	return list, nil
}

func pluginsOf(list map[string]any) ([]any, error) {
	plugins, ok := list["plugins"].([]any)
	if !ok {
		return nil, errors.New(`the CNI configuration list has no "plugins" array`)
	}
	for i, p := range plugins {
		if _, ok := p.(map[string]any); !ok {
			return nil, fmt.Errorf("plugins[%d] is not an object", i)
		}
	}
	return plugins, nil
}

func typeOf(plugin any) string {
	t, _ := plugin.(map[string]any)["type"].(string)
	return t
}

func encode(list map[string]any) ([]byte, error) {
	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("failed to encode the CNI configuration: %w", err)
	}
	return append(out, '\n'), nil
}

func equalJSON(a, b []byte) (bool, error) {
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, &y); err != nil {
		return false, err
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya), nil
}

// Kubeconfig is the plugin's kubeconfig: the API server, its CA and the DaemonSet's token.
func Kubeconfig(opts Options) ([]byte, error) {
	ca, err := os.ReadFile(opts.CAFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read the service account's CA bundle: %w", err)
	}
	token, err := os.ReadFile(opts.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read the service account's token: %w", err)
	}
	if opts.APIServer == "" {
		return nil, errors.New("the API server's address is unknown (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set)")
	}
	config := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": PluginType,
		"clusters": []any{map[string]any{"name": "cluster", "cluster": map[string]any{
			"server": opts.APIServer, "certificate-authority-data": ca}}},
		"users":    []any{map[string]any{"name": PluginType, "user": map[string]any{"token": strings.TrimSpace(string(token))}}},
		"contexts": []any{map[string]any{"name": PluginType, "context": map[string]any{"cluster": "cluster", "user": PluginType}}},
	}
	out, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("failed to encode the plugin's kubeconfig: %w", err)
	}
	return append(out, '\n'), nil
}

// writeIfChanged writes data to path through a temporary file in the same directory and a
// rename, unless path already holds exactly data.
func writeIfChanged(path string, data []byte, mode os.FileMode) error {
	if current, err := os.ReadFile(path); err == nil && bytes.Equal(current, data) {
		return nil
	}
	return replaceFile(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// copyFile copies src to dst the same way, unless dst has the same content. It streams: the
// plugin binary is tens of megabytes and the installer's memory limit is small.
func copyFile(src, dst string, mode os.FileMode) error {
	if same, err := sameContent(src, dst); err != nil || same {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	return replaceFile(dst, mode, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// replaceFile writes path's new content with write into a temporary file of the same directory,
// then renames it over path: a reader sees the old file or the new one, never half of one.
func replaceFile(path string, mode os.FileMode, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := write(tmp); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// sameContent reports whether the files a and b have the same bytes (false when b is missing),
// reading both a block at a time.
func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer func() { _ = fa.Close() }()
	fb, err := os.Open(b)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer func() { _ = fb.Close() }()
	ia, err := fa.Stat()
	if err != nil {
		return false, err
	}
	ib, err := fb.Stat()
	if err != nil || ia.Size() != ib.Size() {
		return false, err
	}
	bufA, bufB := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, errA := io.ReadFull(fa, bufA)
		nb, errB := io.ReadFull(fb, bufB)
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		if errors.Is(errA, io.EOF) || errors.Is(errA, io.ErrUnexpectedEOF) {
			return errors.Is(errB, io.EOF) || errors.Is(errB, io.ErrUnexpectedEOF), nil
		}
		if errA != nil {
			return false, errA
		}
		if errB != nil {
			return false, errB
		}
	}
}
