package krew

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestArchivesDependOnlyOnTheirFiles(t *testing.T) {
	files := []File{
		{Name: "kubectl-meshlift", Mode: 0o755, Content: []byte("binary")},
		{Name: "LICENSE", Mode: 0o644, Content: []byte("license")},
		{Name: "docs/README.md", Mode: 0o600, Content: []byte("readme")},
	}
	var archive bytes.Buffer
	if err := WriteArchive(&archive, files); err != nil {
		t.Fatal(err)
	}

	// The gzip header names no file and no time, and says nothing of the machine it was made on.
	gz, err := gzip.NewReader(bytes.NewReader(archive.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if gz.Name != "" || gz.Comment != "" || !gz.ModTime.IsZero() || gz.OS != 255 {
		t.Errorf("gzip header has name %q, comment %q, time %v, OS %d; want none of them (OS 255, unknown)", gz.Name, gz.Comment, gz.ModTime, gz.OS)
	}

	// Entries are sorted, owned by root without names, dated 2000-01-01, with the given modes.
	tr := tar.NewReader(gz)
	var names []string
	wantModes := map[string]int64{"LICENSE": 0o644, "docs/README.md": 0o600, "kubectl-meshlift": 0o755}
	for {
		header, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, header.Name)
		if header.Uid != 0 || header.Gid != 0 || header.Uname != "" || header.Gname != "" {
			t.Errorf("%s is owned by %d:%d (%q:%q), want 0:0 without names", header.Name, header.Uid, header.Gid, header.Uname, header.Gname)
		}
		if !header.ModTime.Equal(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) || !header.AccessTime.IsZero() || !header.ChangeTime.IsZero() {
			t.Errorf("%s has times %v %v %v, want a modification time of 2000-01-01 only", header.Name, header.ModTime, header.AccessTime, header.ChangeTime)
		}
		if header.Typeflag != tar.TypeReg || header.Mode != wantModes[header.Name] || len(header.PAXRecords) != 0 {
			t.Errorf("%s: type %q mode %04o PAX %v, want a regular file with mode %04o and no PAX records", header.Name, header.Typeflag, header.Mode, header.PAXRecords, wantModes[header.Name])
		}
	}
	if strings.Join(names, " ") != "LICENSE docs/README.md kubectl-meshlift" {
		t.Errorf("entries %q, want them sorted by name", names)
	}

	// The same files in another order and with other backing arrays make the same bytes.
	again := []File{files[2], files[0], {Name: "LICENSE", Mode: 0o644, Content: []byte(string(files[1].Content))}}
	var second bytes.Buffer
	if err := WriteArchive(&second, again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(archive.Bytes(), second.Bytes()) {
		t.Error("the same files given in another order make another archive")
	}
}

func TestArchivesRefuseNamesThatEscapeOrRepeat(t *testing.T) {
	tests := []struct {
		name    string
		files   []File
		wantErr string
	}{
		{name: "an absolute path", files: []File{{Name: "/etc/passwd"}}, wantErr: `"/etc/passwd" is not a clean relative path`},
		{name: "a parent directory", files: []File{{Name: "../kubectl"}}, wantErr: `"../kubectl" is not a clean relative path`},
		{name: "an unclean path", files: []File{{Name: "./kubectl-meshlift"}}, wantErr: `"./kubectl-meshlift" is not a clean relative path`},
		{name: "an empty name", files: []File{{Name: ""}}, wantErr: `"" is not a clean relative path`},
		{name: "two files with one name", files: []File{{Name: "LICENSE"}, {Name: "LICENSE"}}, wantErr: `two files named "LICENSE"`},
		{name: "a mode that is not a regular file's", files: []File{{Name: "link", Mode: 0o777 | 1<<27}}, wantErr: "only permission bits"},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			err := WriteArchive(io.Discard, tt.files)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("WriteArchive error = %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestReadingACorruptArchiveFails(t *testing.T) {
	var archive bytes.Buffer
	if err := WriteArchive(&archive, []File{{Name: "a", Mode: 0o644, Content: bytes.Repeat([]byte("meshlift "), 1000)}}); err != nil {
		t.Fatal(err)
	}
	entries, err := ReadArchive(bytes.NewReader(archive.Bytes()))
	if err != nil || len(entries) != 1 || len(entries[0].Content) != 9000 {
		t.Fatalf("ReadArchive of a sound archive: %d entries, %v", len(entries), err)
	}
	data := archive.Bytes()
	tests := map[string][]byte{
		"not gzip":          []byte("PK\x03\x04 a zip file"),
		"cut short":         data[:len(data)/2],
		"a wrong gzip CRC":  append(append([]byte{}, data[:len(data)-8]...), 0, 0, 0, 0, data[len(data)-4], data[len(data)-3], data[len(data)-2], data[len(data)-1]),
		"a flipped payload": flipByte(data, 20),
	}
	for name, corrupt := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ReadArchive(bytes.NewReader(corrupt)); err == nil {
				t.Error("ReadArchive succeeded")
			}
		})
	}
}

func flipByte(data []byte, at int) []byte {
	flipped := append([]byte{}, data...)
	flipped[at] ^= 0xff
	return flipped
}
