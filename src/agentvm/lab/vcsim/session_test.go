package main

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const extensionKey = "com.example.lab"

func newCertificate(t *testing.T) tls.Certificate {
	t.Helper()
	cert, err := selfSigned()
	if err != nil {
		t.Fatalf("making a certificate: %v", err)
	}
	return cert
}

func pemOf(cert tls.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))
}

// clientWith is a client of srv, not logged in, that presents cert (none when cert is nil).
func clientWith(ctx context.Context, t *testing.T, srv *simulator.Server, cert *tls.Certificate) *vim25.Client {
	t.Helper()
	u := *srv.URL
	u.User = nil
	sc := soap.NewClient(&u, true)
	if cert != nil {
		sc.SetCertificate(*cert)
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	return c
}

// loginByCertificate logs in as key with cert (or none) and returns the session's user name.
func loginByCertificate(ctx context.Context, t *testing.T, srv *simulator.Server, cert *tls.Certificate, key string) (string, error) {
	t.Helper()
	c := clientWith(ctx, t, srv, cert)
	_, err := methods.LoginExtensionByCertificate(ctx, c, &types.LoginExtensionByCertificate{
		This: *c.ServiceContent.SessionManager, ExtensionKey: key,
	})
	if err != nil {
		return "", err
	}
	var sm mo.SessionManager
	if err := property.DefaultCollector(c).RetrieveOne(ctx, *c.ServiceContent.SessionManager, []string{"currentSession"}, &sm); err != nil {
		t.Fatalf("reading the new session: %v", err)
	}
	if sm.CurrentSession == nil {
		t.Fatal("logged in, but the session has no currentSession")
	}
	return sm.CurrentSession.UserName, nil
}

func registered(ctx context.Context, t *testing.T, c *vim25.Client) object.ExtensionManager {
	t.Helper()
	em := *object.NewExtensionManager(c)
	if err := em.Register(ctx, types.Extension{Key: extensionKey}); err != nil {
		t.Fatalf("registering the extension: %v", err)
	}
	return em
}

func TestOnlyTheCertificateSetForTheExtensionLogsInAsIt(t *testing.T) {
	ctx := context.Background()
	srv := serveModel(t, oneSwitch(), true)
	em := registered(ctx, t, login(ctx, t, srv).Client)
	right, wrong := newCertificate(t), newCertificate(t)
	if err := em.SetCertificate(ctx, extensionKey, pemOf(right)); err != nil {
		t.Fatalf("SetExtensionCertificate: %v", err)
	}

	if user, err := loginByCertificate(ctx, t, srv, &right, extensionKey); err != nil || user != extensionKey {
		t.Fatalf("the certificate set: want a session of %s, got %q, %v", extensionKey, user, err)
	}
	if _, err := loginByCertificate(ctx, t, srv, &wrong, extensionKey); err == nil {
		t.Fatal("another certificate logged in")
	} else if _, ok := faultOf(err).(types.InvalidLogin); !ok {
		t.Fatalf("another certificate: want InvalidLogin, got %v", err)
	}
	if _, err := loginByCertificate(ctx, t, srv, &right, "com.example.other"); err == nil {
		t.Fatal("an extension without a certificate logged in")
	} else if _, ok := faultOf(err).(types.InvalidLogin); !ok {
		t.Fatalf("an extension without a certificate: want InvalidLogin, got %v", err)
	}
	if _, err := loginByCertificate(ctx, t, srv, nil, extensionKey); err == nil {
		t.Fatal("no client certificate logged in")
	} else if _, ok := faultOf(err).(types.NoClientCertificate); !ok {
		t.Fatalf("no client certificate: want NoClientCertificate, got %v", err)
	}
}

func TestSetExtensionCertificateWithoutPemTakesTheCallersClientCertificate(t *testing.T) {
	ctx := context.Background()
	srv := serveModel(t, oneSwitch(), true)
	registered(ctx, t, login(ctx, t, srv).Client)

	// no client certificate and no PEM: nothing to set
	if err := object.NewExtensionManager(login(ctx, t, srv).Client).SetCertificate(ctx, extensionKey, ""); err == nil {
		t.Fatal("SetExtensionCertificate without PEM nor client certificate succeeded")
	} else if _, ok := faultOf(err).(types.NoClientCertificate); !ok {
		t.Fatalf("want NoClientCertificate, got %v", err)
	}

	mine, other := newCertificate(t), newCertificate(t)
	admin := clientWith(ctx, t, srv, &mine)
	if _, err := methods.Login(ctx, admin, &types.Login{
		This: *admin.ServiceContent.SessionManager, UserName: "user", Password: "pass",
	}); err != nil {
		t.Fatalf("logging in with a client certificate: %v", err)
	}
	if err := object.NewExtensionManager(admin).SetCertificate(ctx, extensionKey, ""); err != nil {
		t.Fatalf("SetExtensionCertificate with the caller's certificate: %v", err)
	}
	if user, err := loginByCertificate(ctx, t, srv, &mine, extensionKey); err != nil || user != extensionKey {
		t.Fatalf("the caller's certificate: want a session of %s, got %q, %v", extensionKey, user, err)
	}
	if _, err := loginByCertificate(ctx, t, srv, &other, extensionKey); err == nil {
		t.Fatal("another certificate logged in")
	} else if _, ok := faultOf(err).(types.InvalidLogin); !ok {
		t.Fatalf("another certificate: want InvalidLogin, got %v", err)
	}
}
