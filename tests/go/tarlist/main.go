// tarlist prints what Go's archive/tar (the reader Docker 20.10 extracts with, and the one
// tar-split forks) reads from each tar file in a directory: one line per entry with every
// Header field that extraction uses, plus the SHA-256 of the content Go's reader yields,
// or the error that stopped it. The differential tests in ../../go_differential.rs build
// it at test time and compare our readers with its output.
//
// Usage: tarlist DIR
//
// Output, per file in name order (byte strings hex-encoded, "-" when empty; numbers decimal):
//
//	F <file name>
//	E <typeflag> <name> <linkname> <size> <mode> <uid> <gid> <mtime sec> <mtime nsec> <devmajor> <devminor> <content sha256 or ->
//	X <error>    (the reader failed; no more entries)
//	K            (the archive ended cleanly)
package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// hx hex-encodes a string, "-" when empty, so that fields stay space-separated.
func hx(s string) string {
	if s == "" {
		return "-"
	}
	return hex.EncodeToString([]byte(s))
}

func list(w *bufio.Writer, path string) {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(w, "X open: %v\n", err)
		return
	}
	defer f.Close()
	// Not an io.Seeker: read the stream as Docker's extraction does, from a pipe.
	tr := tar.NewReader(struct{ io.Reader }{bufio.NewReader(f)})
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			fmt.Fprintln(w, "K")
			return
		}
		if err != nil {
			fmt.Fprintf(w, "X %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
			return
		}
		content := "-"
		if hdr.Typeflag != tar.TypeXGlobalHeader && hdr.Size > 0 {
			h := sha256.New()
			if _, err := io.Copy(h, tr); err != nil {
				fmt.Fprintf(w, "X %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
				return
			}
			content = hex.EncodeToString(h.Sum(nil))
		}
		sec, nsec := int64(0), 0
		if !hdr.ModTime.IsZero() {
			sec, nsec = hdr.ModTime.Unix(), hdr.ModTime.Nanosecond()
		}
		fmt.Fprintf(w, "E %d %s %s %d %d %d %d %d %d %d %d %s\n",
			hdr.Typeflag,
			hx(hdr.Name), hx(hdr.Linkname),
			hdr.Size, hdr.Mode, hdr.Uid, hdr.Gid, sec, nsec, hdr.Devmajor, hdr.Devminor, content)
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: tarlist DIR")
		os.Exit(2)
	}
	entries, err := os.ReadDir(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for _, name := range names {
		fmt.Fprintf(w, "F %s\n", name)
		list(w, filepath.Join(os.Args[1], name))
	}
}
