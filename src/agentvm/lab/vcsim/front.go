package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// the HTTP front: certificate login routing, host watch, DV port routing, /eam/sdk

var (
	reVmwareSwitch = regexp.MustCompile(`(<[A-Za-z_][\w:.-]*\b[^>]*?type=")VmwareDistributedVirtualSwitch("[^>]*>)([^<]*)<`)
	reSwitchType   = regexp.MustCompile(`<type>VmwareDistributedVirtualSwitch</type>`)
	reLoginExt     = regexp.MustCompile(`<LoginExtensionByCertificate\b`)
	reAddHost      = regexp.MustCompile(`<(AddHost_Task|AddStandaloneHost_Task)\b`)
)

type front struct {
	sim      http.Handler
	eam      http.Handler
	agentMgr *agentManagers
	hostWait time.Time
	mu       sync.Mutex
	esx      bool // a host agent (esx.go): no /eam, no certificate login, PowerOn and maintenance mode as ESXi's (maintenance.go)
}

// serve starts the server of a model built and extended (extend) as the lab runs it: 0.24.2's handlers
// behind the front, with the certificate login registry. Called by main and the Go tests, before any
// client knows the server's address.
func serve(m *simulator.Model, eam http.Handler, agentMgr *agentManagers) *simulator.Server {
	srv := m.Service.NewServer()
	serveCertificateLogin(m.Service)
	srv.Config.Handler = &front{sim: srv.Config.Handler, eam: eam, agentMgr: agentMgr}
	return srv
}

// serveESX starts the server of an ESX model built and extended (extendESX) as the lab runs it: 0.24.2's
// handlers behind the front in its host agent mode. Called by main and the Go tests.
func serveESX(m *simulator.Model) *simulator.Server {
	srv := m.Service.NewServer()
	srv.Config.Handler = &front{sim: srv.Config.Handler, esx: true}
	return srv
}

// soapFault answers a request with the SOAP fault of a vim fault type that has no fields of its own.
func soapFault(w http.ResponseWriter, kind, message string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" `+
		`xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`+
		`<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring>`+
		`<detail><%sFault xmlns="urn:vim25" xsi:type="%s"></%sFault>`+
		`</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`, message, kind, kind, kind)
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

// aliasSwitchType lets a call name a switch as VmwareDistributedVirtualSwitch, the type a real vCenter
// gives a VMware distributed switch (clients that know only its moid use it), wherever a reference is in
// the request (the call's _this, a property collector's obj, a spec's dvs): 0.24.2 registers its switches
// as DistributedVirtualSwitch and finds objects by type and moid.
func aliasSwitchType(body []byte) []byte {
	if len(simulator.Map.All("VmwareDistributedVirtualSwitch")) == 0 {
		// a property collector's PropertySpec names the type too: its properties would match no switch
		body = reSwitchType.ReplaceAll(body, []byte("<type>DistributedVirtualSwitch</type>"))
	}
	return reVmwareSwitch.ReplaceAllFunc(body, func(ref []byte) []byte {
		m := reVmwareSwitch.FindSubmatch(ref)
		moid := string(m[3])
		if simulator.Map.Get(types.ManagedObjectReference{Type: "VmwareDistributedVirtualSwitch", Value: moid}) != nil ||
			simulator.Map.Get(types.ManagedObjectReference{Type: "DistributedVirtualSwitch", Value: moid}) == nil {
			return ref
		}
		var b bytes.Buffer
		b.Write(m[1])
		b.WriteString("DistributedVirtualSwitch")
		b.Write(m[2])
		b.Write(m[3])
		b.WriteString("<")
		return b.Bytes()
	})
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if cause := recover(); cause != nil {
			soapPanic(w, cause)
		}
	}()
	if strings.HasPrefix(r.URL.Path, "/eam/") || r.URL.Path == "/eam" {
		if f.esx { // a host has no EAM
			http.NotFound(w, r)
			return
		}
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
	if reLoginExt.Match(body) {
		if f.esx { // extensions are vCenter's; 0.24.2 would log in any certificate
			soapFault(w, "NotSupported", "extension login is not supported by a host agent")
			return
		}
		r.URL.Path = certificateLoginPath // to certificateLogin (session.go)
	}
	if f.esx {
		routed, kind := routePowerOn(body)
		if kind == "" {
			routed, kind = routeMaintenance(body)
		}
		if kind == "" {
			routed, kind = routeFileTasks(routed)
		}
		rw := &routedWriter{ResponseWriter: w, routed: kind, kind: "VirtualMachine"}
		switch kind {
		case maintenanceGuardType:
			rw.kind = "HostSystem"
		case fileTasksType:
			rw.kind = "FileManager"
		}
		r.Body = io.NopCloser(bytes.NewReader(routed))
		r.ContentLength = int64(len(routed))
		if kind == "" {
			f.sim.ServeHTTP(w, r)
			return
		}
		f.sim.ServeHTTP(rw, r)
		rw.flush()
		return
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
	body = aliasSwitchType(body)
	routed, routedType, kind := routeDVPortCalls(body)
	r.Body = io.NopCloser(bytes.NewReader(routed))
	r.ContentLength = int64(len(routed))
	if kind == "" {
		f.sim.ServeHTTP(w, r)
		return
	}
	rw := &routedWriter{ResponseWriter: w, routed: routedType, kind: kind}
	f.sim.ServeHTTP(rw, r)
	rw.flush()
}
