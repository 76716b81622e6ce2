package main

// Shared helpers of the Go tests: models of 0.24.2's simulator extended as main extends them, served by
// simulator.Test (0.24.2's own server and client) or, where the front matters, by serve.

import (
	"context"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/simulator"
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
	return extend(m, "")
}

// served serves m (extended) behind the front, as main does, and returns a client logged in with 0.24.2's
// default user; everything is stopped and removed when the test ends.
func served(ctx context.Context, t *testing.T, m *simulator.Model) *govmomi.Client {
	t.Helper()
	mgrs := extended(t, m)
	srv := serve(m, eamProxy(""), mgrs)
	t.Cleanup(func() {
		srv.Close()
		m.Remove()
	})
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

// faultOf returns the vim fault an error of a SOAP call carries (nil for none or another error).
func faultOf(err error) types.AnyType {
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
