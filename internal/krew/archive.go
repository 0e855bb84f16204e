package krew

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	// ExecutableMode is the mode of the plugin binary in an archive.
	ExecutableMode fs.FileMode = 0o755
	// RegularMode is the mode of every other file in an archive.
	RegularMode fs.FileMode = 0o644
)

// archiveModTime is the modification time of every archive entry, so that an archive depends on
// file contents only. Not the Unix epoch, which some tar implementations warn about.
var archiveModTime = time.Date(2000, time.January, 1, 0, 0, 0, 0, time.UTC)

// maxArchiveContent bounds what ReadArchive decompresses, so a corrupt or hostile archive cannot
// exhaust memory; a release's binary is well below it.
const maxArchiveContent = 1 << 30

// File is one regular file of an archive.
type File struct {
	// Name is the path in the archive: relative, slash-separated, without "." or ".." elements.
	Name    string
	Mode    fs.FileMode
	Content []byte
}

// WriteArchive writes files as a gzip-compressed tar archive that depends on nothing but the
// names, modes and contents of files: entries sorted by name, a fixed modification time, owner
// root (uid and gid 0, no user or group names), no directory entries, USTAR headers, and a gzip
// header without file name or time.
func WriteArchive(w io.Writer, files []File) error {
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	for i, file := range sorted {
		if err := checkEntryName(file.Name); err != nil {
			return err
		}
		if i > 0 && sorted[i-1].Name == file.Name {
			return fmt.Errorf("two files named %q", file.Name)
		}
		if file.Mode&^fs.ModePerm != 0 {
			return fmt.Errorf("file %q has mode %v: only permission bits of regular files are supported", file.Name, file.Mode)
		}
	}

	gz, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return fmt.Errorf("failed to create the gzip writer: %w", err)
	}
	tw := tar.NewWriter(gz)
	for _, file := range sorted {
		header := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     file.Name,
			Mode:     int64(file.Mode.Perm()),
			Size:     int64(len(file.Content)),
			ModTime:  archiveModTime,
			Format:   tar.FormatUSTAR,
		}
		if err := tw.WriteHeader(header); err != nil {
			return fmt.Errorf("failed to write the tar header of %s: %w", file.Name, err)
		}
		if _, err := tw.Write(file.Content); err != nil {
			return fmt.Errorf("failed to write %s into the archive: %w", file.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("failed to finish the tar stream: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("failed to finish the gzip stream: %w", err)
	}
	return nil
}

// WriteArchiveFile writes files as an archive (see WriteArchive) to filePath and returns the
// archive's lowercase hex sha256. The file appears complete or not at all.
func WriteArchiveFile(filePath string, files []File) (digest string, err error) {
	var archive bytes.Buffer
	if err := WriteArchive(&archive, files); err != nil {
		return "", err
	}
	sum := sha256.Sum256(archive.Bytes())
	if err := writeFileAtomically(filePath, archive.Bytes()); err != nil {
		return "", err
	}
	return hex.EncodeToString(sum[:]), nil
}

// writeFileAtomically writes data to a temporary file next to filePath and renames it into place.
func writeFileAtomically(filePath string, data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(filePath), "."+filepath.Base(filePath)+".*")
	if err != nil {
		return fmt.Errorf("failed to create a file next to %s: %w", filePath, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(RegularMode); err != nil {
		return fmt.Errorf("failed to set the mode of %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), filePath); err != nil {
		return fmt.Errorf("failed to move %s to %s: %w", tmp.Name(), filePath, err)
	}
	return nil
}

// Entry is one entry of an archive as ReadArchive found it.
type Entry struct {
	Name     string
	Typeflag byte
	Mode     fs.FileMode
	// Content is the content of a regular file, nil for other entries.
	Content []byte
}

// ReadArchive returns the entries of a gzip-compressed tar archive in archive order.
func ReadArchive(r io.Reader) ([]Entry, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("not a gzip stream: %w", err)
	}
	defer func() { _ = gz.Close() }()
	tr := tar.NewReader(gz)
	var entries []Entry
	var total int64
	for {
		header, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read the tar stream after %d entries: %w", len(entries), err)
		}
		entry := Entry{Name: header.Name, Typeflag: header.Typeflag, Mode: fs.FileMode(header.Mode).Perm()}
		if header.Typeflag == tar.TypeReg {
			total += header.Size
			if total > maxArchiveContent {
				return nil, fmt.Errorf("the archive holds more than %d bytes", maxArchiveContent)
			}
			entry.Content, err = io.ReadAll(tr)
			if err != nil {
				return nil, fmt.Errorf("failed to read %s from the archive: %w", header.Name, err)
			}
		}
		entries = append(entries, entry)
	}
	// Reading to the end of the gzip stream checks its CRC and length.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return nil, fmt.Errorf("the gzip stream is corrupt: %w", err)
	}
	return entries, nil
}

// checkEntryName returns an error unless name is a clean relative path inside the archive.
func checkEntryName(name string) error {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == "." || name == ".." ||
		strings.HasPrefix(name, "../") || strings.Contains(name, "\\") {
		return fmt.Errorf("archive entry name %q is not a clean relative path", name)
	}
	return nil
}
