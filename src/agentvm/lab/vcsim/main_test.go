package main

// Shared helpers of the Go tests: models of 0.24.2's simulator extended as main extends them, served by
// simulator.Test (0.24.2's own server and client) or, where the front matters, by serve.

import (
	"context"
	"crypto/tls"
	"net/url"
	"reflect"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// extended builds m and gives it what main gives the lab's model; 0.24.2's helpers remove it after use.
func extended(t *testing.T, m *simulator.Model) *agentManagers {
	t.Helper()
	if err := m.Create(); err != nil {
		t.Fatalf("building the model: %v", err)
	}
	certs = &certStore{tp: map[string]string{}} // no certificate set by an earlier test's model
	return extend(m, "")
}

// served serves m (extended) behind the front, as main does, and returns a client logged in with 0.24.2's
// default user; everything is stopped and removed when the test ends.
func served(ctx context.Context, t *testing.T, m *simulator.Model) *govmomi.Client {
	t.Helper()
	return login(ctx, t, serveModel(t, m, false))
}

// serveModel builds, extends and serves m behind the front (over HTTPS with useTLS, asking for client
// certificates as main does), until the test ends.
func serveModel(t *testing.T, m *simulator.Model, useTLS bool) *simulator.Server {
	t.Helper()
	mgrs := extended(t, m)
	if useTLS {
		m.Service.TLS = new(tls.Config) // 0.24.2's server then uses a certificate of its own
	}
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0"} // loopback, a free port, as main insists
	srv := serve(m, eamProxy(""), mgrs)
	t.Cleanup(func() {
		srv.Close()
		m.Remove()
	})
	return srv
}

// login logs in to srv with 0.24.2's default user.
func login(ctx context.Context, t *testing.T, srv *simulator.Server) *govmomi.Client {
	t.Helper()
	c, err := govmomi.NewClient(ctx, srv.URL, true)
	if err != nil {
		t.Fatalf("logging in: %v", err)
	}
	return c
}

// containerView is a view of every object of kind under the root folder.
func containerView(ctx context.Context, t *testing.T, c *vim25.Client, kind string) *view.ContainerView {
	t.Helper()
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{kind}, true)
	if err != nil {
		t.Fatalf("container view of %s: %v", kind, err)
	}
	return v
}

// viewSpec selects property paths of every kind object of view v.
func viewSpec(v *view.ContainerView, kind string, paths ...string) types.PropertyFilterSpec {
	return types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{
			Obj:       v.Reference(),
			Skip:      types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{Type: "ContainerView", Path: "view"}},
		}},
		PropSet: []types.PropertySpec{{Type: kind, PathSet: paths}},
	}
}

// faultOf returns the vim fault (a value, e.g. types.InvalidArgument) that the error of a SOAP call or of
// a task carries; nil for no error or another one.
func faultOf(err error) types.AnyType {
	if te, ok := err.(task.Error); ok && te.Fault() != nil {
		return reflect.ValueOf(te.Fault()).Elem().Interface()
	}
	if err == nil || !soap.IsSoapFault(err) {
		return nil
	}
	return soap.ToSoapFault(err).VimFault()
}

// names returns the names of all objects of kind in 0.24.2's registry (what the model holds).
func names(kind string) map[string]types.ManagedObjectReference {
	all := map[string]types.ManagedObjectReference{}
	for _, e := range simulator.Map.All(kind) {
		if entity, ok := e.(mo.Entity); ok {
			all[entity.Entity().Name] = e.Reference()
		}
	}
	return all
}
