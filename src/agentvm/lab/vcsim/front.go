package main

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// the HTTP front: extension certificate checks, host watch, /eam/sdk

var (
	reLoginExt  = regexp.MustCompile(`(?s)<LoginExtensionByCertificate\b.*?<extensionKey\b[^>]*>([^<]*)</extensionKey>`)
	reSetCert   = regexp.MustCompile(`(?s)<SetExtensionCertificate\b.*?</SetExtensionCertificate>`)
	reAddHost   = regexp.MustCompile(`<(AddHost_Task|AddStandaloneHost_Task)\b`)
	rePemInBody = regexp.MustCompile(`<certificatePem\b`)
)

type front struct {
	sim      http.Handler
	eam      http.Handler
	agentMgr *agentManagers
	hostWait time.Time
	mu       sync.Mutex
}

// soapPanic answers a request whose handler panicked inside the 0.24.2 simulator (e.g. a Fetch of an
// object it cannot find) with a SystemError fault, instead of the dropped connection net/http gives.
func soapPanic(w http.ResponseWriter, cause interface{}) {
	msg := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(fmt.Sprint(cause))
	fmt.Fprintf(os.Stderr, "agentvm-vcsim: recovered from a simulator panic: %s\n", msg)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" `+
		`xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`+
		`<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>simulator error: %s</faultstring>`+
		`<detail><SystemErrorFault xmlns="urn:vim25" xsi:type="SystemError"><reason>%s</reason></SystemErrorFault>`+
		`</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`, msg, msg)
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if cause := recover(); cause != nil {
			soapPanic(w, cause)
		}
	}()
	if strings.HasPrefix(r.URL.Path, "/eam/") || r.URL.Path == "/eam" {
		f.eam.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/sdk") {
		f.sim.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if m := reLoginExt.FindSubmatchIndex(body); m != nil {
		key := string(body[m[2]:m[3]])
		tp, _ := peerThumbprint(r)
		want, ok := certs.get(key)
		if tp != "" && (!ok || want != tp) {
			// Not the certificate registered for this extension: blank the key, which the
			// simulator answers with InvalidLogin, the fault a real vCenter gives.
			body = append(append([]byte{}, body[:m[2]]...), body[m[3]:]...)
		}
	}
	if loc := reSetCert.FindIndex(body); loc != nil && !rePemInBody.Match(body[loc[0]:loc[1]]) {
		if _, der := peerThumbprint(r); der != nil {
			p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
			end := loc[1] - len("</SetExtensionCertificate>")
			var b bytes.Buffer
			b.Write(body[:end])
			b.WriteString("<certificatePem>")
			b.Write(p)
			b.WriteString("</certificatePem>")
			b.Write(body[end:])
			body = b.Bytes()
		}
	}
	if reAddHost.Match(body) {
		f.mu.Lock()
		f.hostWait = time.Now().Add(30 * time.Second)
		f.mu.Unlock()
	}
	f.mu.Lock()
	scan := time.Now().Before(f.hostWait)
	f.mu.Unlock()
	if scan {
		// a host added by a task is given its agent manager before anyone can read it
		f.agentMgr.ensure()
	}
	routed, kind := routeDVPortCalls(body)
	r.Body = io.NopCloser(bytes.NewReader(routed))
	r.ContentLength = int64(len(routed))
	if kind == "" {
		f.sim.ServeHTTP(w, r)
		return
	}
	rw := &routedWriter{ResponseWriter: w, kind: kind}
	f.sim.ServeHTTP(rw, r)
	rw.flush()
}
