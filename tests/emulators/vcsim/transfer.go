// SPDX-License-Identifier: MIT
// The two byte paths: NFC downloads of a lease's streams (with switches for
// Range, Content-Length, pacing and a cut connection) and datastore file
// reads under /folder/ (session cookie required, may be refused).
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// parseRange reads a single "bytes=a-b" / "bytes=a-" / "bytes=-n" range.
func parseRange(h string, size int64) (int64, int64, bool) {
	if !strings.HasPrefix(h, "bytes=") || strings.Contains(h, ",") {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(strings.TrimPrefix(h, "bytes="), "-")
	if !ok {
		return 0, 0, false
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		if n > size {
			n = size
		}
		return size - n, size - 1, true
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start >= size {
		return 0, 0, false
	}
	end := size - 1
	if b != "" {
		if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
			return 0, 0, false
		}
		if end >= size {
			end = size - 1
		}
	}
	return start, end, true
}

func (e *emulator) serveNFC(w http.ResponseWriter, r *http.Request) {
	e.count("nfc.requests", 1)
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/nfc/"), "/")
	if len(parts) != 2 {
		http.NotFound(w, r)
		return
	}
	l := e.leaseByTicket(parts[0])
	if l == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	l.mu.Lock()
	state := l.state
	file := l.files[parts[1]]
	l.mu.Unlock()
	if state != types.HttpNfcLeaseStateReady || file == nil {
		// An ended, timed-out or unknown lease no longer serves anything.
		e.count("nfc.refused", 1)
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(file.path)
	if err != nil {
		e.count("nfc.refused", 1)
		http.NotFound(w, r)
		return
	}
	defer f.Close()

	opts := e.snapshotFaults()
	start, end := int64(0), file.size-1
	status := http.StatusOK
	if rh := r.Header.Get("Range"); rh != "" && opts.NfcRange {
		s, en, ok := parseRange(rh, file.size)
		if !ok {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", file.size))
			http.Error(w, "range not satisfiable", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, end, status = s, en, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s, en, file.size))
	}
	if opts.NfcRange {
		w.Header().Set("Accept-Ranges", "bytes")
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	length := end - start + 1
	if opts.NfcLength {
		w.Header().Set("Content-Length", strconv.FormatInt(length, 10))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return
	}
	e.count("nfc.downloads", 1)
	e.pace(w, f, length, opts, "nfc.bytes")
}

// pace copies n bytes in slices, at opts.NfcRate bytes/s if set, and cuts
// the connection after opts.NfcFailAfter bytes if set.
func (e *emulator) pace(w http.ResponseWriter, src io.Reader, n int64, opts Faults, counter string) {
	flusher, _ := w.(http.Flusher)
	slice := int64(64 << 10)
	if opts.NfcRate > 0 && opts.NfcRate/10 < slice {
		slice = opts.NfcRate/10 + 1
	}
	buf := make([]byte, slice)
	began := time.Now()
	var sent int64
	for sent < n {
		want := int64(len(buf))
		if n-sent < want {
			want = n - sent
		}
		if opts.NfcFailAfter >= 0 && sent+want > opts.NfcFailAfter {
			want = opts.NfcFailAfter - sent
		}
		if want > 0 {
			got, err := io.ReadFull(src, buf[:want])
			if got > 0 {
				if _, werr := w.Write(buf[:got]); werr != nil {
					e.count(counter, sent)
					return
				}
				sent += int64(got)
			}
			if err != nil {
				break
			}
		}
		if opts.NfcFailAfter >= 0 && sent >= opts.NfcFailAfter {
			if flusher != nil {
				flusher.Flush()
			}
			e.count(counter, sent)
			e.count("nfc.cut", 1)
			// Ends the handler without finishing the response: the
			// server closes the connection mid-body.
			panic(http.ErrAbortHandler)
		}
		if opts.NfcRate > 0 {
			if flusher != nil {
				flusher.Flush()
			}
			due := began.Add(time.Duration(float64(sent) / float64(opts.NfcRate) * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
	}
	e.count(counter, sent)
}

// countingWriter counts the body bytes a wrapped handler writes.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// lockedBy says which running VM without a snapshot writes the datastore
// file rel ("DC0_H0_VM0/disk1-flat.vmdk"); "" when none.
func (e *emulator) lockedBy(ds, rel string) string {
	for _, v := range e.vms() {
		if v.Power != string(types.VirtualMachinePowerStatePoweredOn) || v.Snapshots > 0 {
			continue
		}
		for _, d := range v.Disks {
			if d.Datastore == ds && (d.FlatName == rel ||
				strings.TrimSuffix(d.FlatName, "-flat.vmdk")+".vmdk" == rel) {
				return v.Name
			}
		}
	}
	return ""
}

func (e *emulator) serveFolder(w http.ResponseWriter, r *http.Request) {
	e.count("folder.requests", 1)
	opts := e.snapshotFaults()
	if opts.DenyDatastore {
		e.count("folder.denied", 1)
		http.Error(w, "Permission to perform this operation was denied.", http.StatusForbidden)
		return
	}
	if !e.validSession(r) {
		e.count("folder.unauthorized", 1)
		w.Header().Set("WWW-Authenticate", `Basic realm="VMware HTTP server"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		rel := path.Clean(strings.TrimPrefix(r.URL.Path, "/folder/"))
		ds := r.URL.Query().Get("dsName")
		if opts.LockRunning {
			if vm := e.lockedBy(ds, rel); vm != "" {
				e.count("folder.locked", 1)
				http.Error(w, fmt.Sprintf("Cannot open the disk '%s' or one of the snapshot disks it depends on: "+
					"the file is locked by the running virtual machine %s", rel, vm),
					http.StatusInternalServerError)
				return
			}
		}
		e.count("folder.gets", 1)
		cw := &countingWriter{ResponseWriter: w}
		e.inner.ServeHTTP(cw, r)
		e.count("folder.bytes", cw.n)
		return
	}
	e.inner.ServeHTTP(w, r)
}

var _ = simulator.Map
