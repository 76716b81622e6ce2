package main

import (
	"net/http"
	"reflect"
	"unsafe"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Certificate login: 0.24.2's LoginExtensionByCertificate logs in any extension key with any TLS client
// certificate. A real vCenter accepts only the certificate set for that extension with
// SetExtensionCertificate (ExtensionManager keeps its thumbprint in certs), and answers InvalidLogin to
// any other; certificateLogin does that check, then lets 0.24.2's SessionManager create the session.
//
// certificateLogin cannot replace the simulator's SessionManager in its registry: 0.24.2 type-asserts that
// object as *simulator.SessionManager (Registry.SessionManager, the per-session view of Session.Get). So
// it lives in a registry of its own, served at certificateLoginPath, and the front sends every
// LoginExtensionByCertificate call there (by URL path; the SOAP body is passed on as it came).

const certificateLoginPath = "/sdk/agentvm-certificate-login"

type certificateLogin struct {
	*simulator.SessionManager // the simulator's own: sessions are created and kept there
}

// LoginExtensionByCertificate refuses a client certificate other than the one set for the extension
// with InvalidLogin; without a client certificate, or with the right one, 0.24.2 answers
// (NoClientCertificate, or a new session).
func (s *certificateLogin) LoginExtensionByCertificate(ctx *simulator.Context,
	req *types.LoginExtensionByCertificate) soap.HasFault {
	if tp, _ := peerThumbprint(requestOf(ctx)); tp != "" {
		if want, ok := certs.get(req.ExtensionKey); !ok || want != tp {
			return &methods.LoginExtensionByCertificateBody{
				Fault_: simulator.Fault("Login failure", new(types.InvalidLogin)), // what 0.24.2 and vCenter say
			}
		}
	}
	return s.SessionManager.LoginExtensionByCertificate(ctx, req)
}

// serveCertificateLogin registers certificateLogin's registry with svc (before or after NewServer).
func serveCertificateLogin(svc *simulator.Service) {
	r := simulator.NewRegistry()
	r.Path = certificateLoginPath
	r.Put(&certificateLogin{SessionManager: simulator.Map.SessionManager()})
	svc.RegisterSDK(r)
}

var requestType = reflect.TypeOf((*http.Request)(nil))

// requestOf returns the HTTP request a SOAP call came in, or nil for an in-process call. 0.24.2 keeps it
// in Context's unexported req field (its own LoginExtensionByCertificate reads the TLS state there) and
// exports no accessor, so it is read by reflection; the type check makes a different govmomi fail safe.
func requestOf(ctx *simulator.Context) *http.Request {
	if ctx == nil {
		return nil
	}
	field := reflect.ValueOf(ctx).Elem().FieldByName("req")
	if !field.IsValid() || field.Type() != requestType {
		return nil
	}
	return *(**http.Request)(unsafe.Pointer(field.UnsafeAddr()))
}
