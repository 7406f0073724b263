// SPDX-License-Identifier: MIT
// The front HTTP handler: counts every call, applies the fault switches,
// tracks SOAP sessions, and routes the methods the simulator lacks to the
// objects this program registers (by rewriting the request's _this type).
package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"

	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

const sessionCookie = "vmware_soap_session"

// Faults are the switches a test sets through the control endpoint.
type Faults struct {
	ExportFault   string `json:"export_fault"`   // fault name ExportVm answers with, "" for none
	LoginFail     int    `json:"login_fail"`     // the next N Logins get InvalidLogin
	DenyDatastore bool   `json:"deny_datastore"` // /folder/ answers 403
	LockRunning   bool   `json:"lock_running"`   // a running VM's disk without a snapshot is locked
	LeaseTimeout  int    `json:"lease_timeout"`  // seconds a lease lives without HttpNfcLeaseProgress
	LeaseInitMs   int    `json:"lease_init_ms"`  // extra time a lease stays "initializing"
	PageSize      int    `json:"page_size"`      // RetrievePropertiesEx page cap, 0 for none
	NfcRange      bool   `json:"nfc_range"`      // NFC downloads honour Range
	NfcLength     bool   `json:"nfc_length"`     // NFC downloads send Content-Length
	NfcRate       int64  `json:"nfc_rate"`       // NFC bytes per second, 0 for unlimited
	NfcFailAfter  int64  `json:"nfc_fail_after"` // cut the NFC connection after this many bytes, -1 never
	NfcHostStar   bool   `json:"nfc_host_star"`  // deviceUrl host is "*"
	NfcFileSize   bool   `json:"nfc_file_size"`  // deviceUrl.fileSize is the stream's size (else 0)
	CbtSpan       int64  `json:"cbt_span"`       // bytes of the disk one QueryChangedDiskAreas answer covers
	CbtOff        bool   `json:"cbt_off"`        // QueryChangedDiskAreas faults as if tracking were off
	CbtLie        string `json:"cbt_lie"`        // "past_end", "repeat", "endless", "overlap" or ""
}

func defaultFaults() Faults {
	return Faults{LockRunning: true, LeaseTimeout: 300, PageSize: 2,
		NfcRange: false, NfcLength: true, NfcFailAfter: -1,
		NfcHostStar: true, NfcFileSize: true, CbtSpan: MiB}
}

type emulator struct {
	client  *vim25.Client
	workDir string
	inner   http.Handler
	scheme  string

	mu       sync.Mutex // protects everything below
	defaults Faults
	faults   Faults
	counters map[string]int64
	sessions map[string]bool // cookie value -> still valid
	leases   []*nfcLease
	initial  map[string]vmPlan // by VM name: what reset restores
	pager    *pager
	nextID   int
	cbtMiB   int64 // size of the powered-off VM with tracking on
}

func newEmulator(c *vim25.Client, workDir string) *emulator {
	return &emulator{client: c, workDir: workDir, defaults: defaultFaults(),
		counters: map[string]int64{}, sessions: map[string]bool{},
		initial: map[string]vmPlan{}}
}

func (e *emulator) count(name string, n int64) {
	e.mu.Lock()
	e.counters[name] += n
	e.mu.Unlock()
}

func (e *emulator) snapshotFaults() Faults {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.faults
}

// ServeHTTP is the handler in front of the simulator's mux.
func (e *emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/nfc/"):
		e.serveNFC(w, r)
	case strings.HasPrefix(r.URL.Path, "/folder/"):
		e.serveFolder(w, r)
	case (r.URL.Path == "/sdk" || r.URL.Path == "/sdk/vimService") && r.Method == http.MethodPost:
		e.serveSDK(w, r)
	default:
		e.inner.ServeHTTP(w, r)
	}
}

// validSession says whether the request carries a live session cookie.
func (e *emulator) validSession(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sessions[c.Value]
}

// dropDeadSession removes a session cookie the emulator expired, so the
// simulator sees a request without a session (NotAuthenticated).
func (e *emulator) dropDeadSession(r *http.Request) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return
	}
	e.mu.Lock()
	valid, known := e.sessions[c.Value]
	e.mu.Unlock()
	if !known || valid {
		return
	}
	var keep []string
	for _, ck := range r.Cookies() {
		if ck.Name != sessionCookie {
			keep = append(keep, ck.Name+"="+ck.Value)
		}
	}
	r.Header.Del("Cookie")
	if len(keep) > 0 {
		r.Header.Set("Cookie", strings.Join(keep, "; "))
	}
}

// soapCall is what the front handler needs to know about a request.
type soapCall struct {
	method   string
	thisType string
	thisVal  string
	thisFrom int64 // byte offsets of the _this start tag
	thisTo   int64
}

// parseCall finds the method element (first child of Body) and its _this.
func parseCall(body []byte) soapCall {
	var call soapCall
	d := xml.NewDecoder(bytes.NewReader(body))
	depth, bodyDepth := 0, -1
	for {
		from := d.InputOffset()
		tok, err := d.Token()
		if err != nil {
			return call
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			switch {
			case bodyDepth < 0 && t.Name.Local == "Body" &&
				t.Name.Space == "http://schemas.xmlsoap.org/soap/envelope/":
				bodyDepth = depth
			case bodyDepth > 0 && depth == bodyDepth+1:
				call.method = t.Name.Local
			case bodyDepth > 0 && depth == bodyDepth+2 && t.Name.Local == "_this":
				call.thisFrom, call.thisTo = from, d.InputOffset()
				for _, a := range t.Attr {
					if a.Name.Local == "type" {
						call.thisType = a.Value
					}
				}
				if cd, err := d.Token(); err == nil {
					if c, ok := cd.(xml.CharData); ok {
						call.thisVal = strings.TrimSpace(string(c))
					}
				}
				return call
			}
		case xml.EndElement:
			depth--
		}
	}
}

var typeAttr = regexp.MustCompile(`type\s*=\s*("[^"]*"|'[^']*')`)

// retype rewrites the type attribute of the request's _this element.
func retype(body []byte, call soapCall, newType string) []byte {
	tag := body[call.thisFrom:call.thisTo]
	loc := typeAttr.FindIndex(tag)
	if loc == nil {
		return body
	}
	out := make([]byte, 0, len(body)+len(newType))
	out = append(out, body[:call.thisFrom+int64(loc[0])]...)
	out = append(out, []byte(`type="`+newType+`"`)...)
	out = append(out, body[call.thisFrom+int64(loc[1]):]...)
	return out
}

var passwordElem = regexp.MustCompile(`(<(?:[A-Za-z0-9_]+:)?password\b[^>]*>)[^<]*(</)`)

func (e *emulator) serveSDK(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	call := parseCall(body)
	e.count("soap."+call.method, 1)
	e.dropDeadSession(r)

	switch call.method {
	case "Login":
		e.mu.Lock()
		fail := e.faults.LoginFail > 0
		if fail {
			e.faults.LoginFail--
		}
		e.mu.Unlock()
		if fail {
			// A wrong password makes the simulator answer its own InvalidLogin.
			body = passwordElem.ReplaceAll(body, []byte("${1}cfs-refused${2}"))
			e.count("fault.Login", 1)
		}
	case "ExportVm", "QueryChangedDiskAreas":
		if call.thisType == "VirtualMachine" {
			e.ensureVmProxy(call.thisVal)
			body = retype(body, call, vmProxyType)
		}
	case "CreateDescriptor":
		if call.thisType == "OvfManager" {
			body = retype(body, call, ovfProxyType)
		}
	case "RetrievePropertiesEx", "ContinueRetrievePropertiesEx", "CancelRetrievePropertiesEx":
		if call.thisType == "PropertyCollector" && call.thisVal == e.pager.pc.Value {
			body = retype(body, call, pagerType)
		}
	}

	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	old, _ := r.Cookie(sessionCookie)
	e.inner.ServeHTTP(w, r)

	// Track the sessions the simulator hands out and ends.
	for _, line := range w.Header()["Set-Cookie"] {
		resp := http.Response{Header: http.Header{"Set-Cookie": {line}}}
		for _, c := range resp.Cookies() {
			if c.Name == sessionCookie && c.Value != "" {
				e.mu.Lock()
				e.sessions[c.Value] = true
				e.mu.Unlock()
			}
		}
	}
	if call.method == "Logout" && old != nil {
		e.mu.Lock()
		if e.sessions[old.Value] {
			e.sessions[old.Value] = false
		}
		e.mu.Unlock()
	}
}

// expireSessions ends every session: the next call with any of their
// cookies gets NotAuthenticated, datastore reads get 401.
func (e *emulator) expireSessions() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for k, v := range e.sessions {
		if v {
			e.sessions[k] = false
			n++
		}
	}
	return n
}

// notAuthenticated is the fault a call without a live session gets.
func notAuthenticated(this types.ManagedObjectReference) *types.NotAuthenticated {
	return &types.NotAuthenticated{NoPermission: types.NoPermission{
		Object: this, PrivilegeId: "System.View"}}
}
