package main

import (
	"context"
	"testing"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// fiveHosts is one datacenter with one cluster of five hosts and nothing else.
func fiveHosts() *simulator.Model {
	m := simulator.VPX()
	m.Cluster, m.ClusterHost, m.Host, m.Machine, m.Portgroup = 1, 5, 0, 0, 0
	return m
}

func retrieveHosts(ctx context.Context, t *testing.T, c *vim25.Client, maxObjects int32) *types.RetrieveResult {
	t.Helper()
	v := containerView(ctx, t, c, "HostSystem")
	res, err := methods.RetrievePropertiesEx(ctx, c, &types.RetrievePropertiesEx{
		This:    c.ServiceContent.PropertyCollector,
		SpecSet: []types.PropertyFilterSpec{viewSpec(v, "HostSystem", "name")},
		Options: types.RetrieveOptions{MaxObjects: maxObjects},
	})
	if err != nil {
		t.Fatalf("RetrievePropertiesEx: %v", err)
	}
	if res.Returnval == nil {
		t.Fatal("RetrievePropertiesEx returned no result")
	}
	return res.Returnval
}

func hostNames(objects []types.ObjectContent) []string {
	var seen []string
	for _, o := range objects {
		for _, p := range o.PropSet {
			seen = append(seen, p.Val.(string))
		}
	}
	return seen
}

func TestRetrievePropertiesExPagesByMaxObjectsAndContinueFollowsTheToken(t *testing.T) {
	m := fiveHosts()
	extended(t, m)
	simulator.Test(func(ctx context.Context, c *vim25.Client) {
		page := retrieveHosts(ctx, t, c, 2)
		var pages [][]string
		for {
			pages = append(pages, hostNames(page.Objects))
			if page.Token == "" {
				break
			}
			res, err := methods.ContinueRetrievePropertiesEx(ctx, c, &types.ContinueRetrievePropertiesEx{
				This: c.ServiceContent.PropertyCollector, Token: page.Token,
			})
			if err != nil {
				t.Fatalf("ContinueRetrievePropertiesEx: %v", err)
			}
			page = &res.Returnval
		}
		if len(pages) != 3 || len(pages[0]) != 2 || len(pages[1]) != 2 || len(pages[2]) != 1 {
			t.Fatalf("5 hosts by 2 should come in pages of 2, 2 and 1, got %v", pages)
		}
		all := map[string]bool{}
		for _, p := range pages {
			for _, name := range p {
				all[name] = true
			}
		}
		want := names("HostSystem")
		if len(all) != len(want) {
			t.Fatalf("the pages hold %d distinct hosts, the model %d: %v", len(all), len(want), pages)
		}
		for name := range want {
			if !all[name] {
				t.Errorf("host %s is on no page", name)
			}
		}
	}, m)
}

func TestRetrievePropertiesExWithoutMaxObjectsReturnsEverythingAtOnce(t *testing.T) {
	m := fiveHosts()
	extended(t, m)
	simulator.Test(func(ctx context.Context, c *vim25.Client) {
		page := retrieveHosts(ctx, t, c, 0)
		if page.Token != "" || len(page.Objects) != 5 {
			t.Fatalf("want 5 hosts and no token, got %d and token %q", len(page.Objects), page.Token)
		}
	}, m)
}

func TestACancelledOrFinishedTokenCannotBeContinued(t *testing.T) {
	m := fiveHosts()
	extended(t, m)
	simulator.Test(func(ctx context.Context, c *vim25.Client) {
		pc := c.ServiceContent.PropertyCollector
		page := retrieveHosts(ctx, t, c, 4)
		if page.Token == "" {
			t.Fatal("5 hosts by 4 should leave a token")
		}
		if _, err := methods.CancelRetrievePropertiesEx(ctx, c, &types.CancelRetrievePropertiesEx{
			This: pc, Token: page.Token,
		}); err != nil {
			t.Fatalf("CancelRetrievePropertiesEx: %v", err)
		}
		_, err := methods.ContinueRetrievePropertiesEx(ctx, c, &types.ContinueRetrievePropertiesEx{This: pc, Token: page.Token})
		if f, ok := faultOf(err).(types.InvalidArgument); !ok || f.InvalidProperty != "token" {
			t.Fatalf("continuing a cancelled token: want InvalidArgument(token), got %v", err)
		}
		_, err = methods.CancelRetrievePropertiesEx(ctx, c, &types.CancelRetrievePropertiesEx{This: pc, Token: page.Token})
		if _, ok := faultOf(err).(types.InvalidArgument); !ok {
			t.Fatalf("cancelling a cancelled token: want InvalidArgument, got %v", err)
		}

		page = retrieveHosts(ctx, t, c, 4)
		res, err := methods.ContinueRetrievePropertiesEx(ctx, c, &types.ContinueRetrievePropertiesEx{This: pc, Token: page.Token})
		if err != nil || res.Returnval.Token != "" || len(res.Returnval.Objects) != 1 {
			t.Fatalf("the last page: want 1 host and no token, got %+v, %v", res, err)
		}
		_, err = methods.ContinueRetrievePropertiesEx(ctx, c, &types.ContinueRetrievePropertiesEx{This: pc, Token: page.Token})
		if _, ok := faultOf(err).(types.InvalidArgument); !ok {
			t.Fatalf("continuing a finished token: want InvalidArgument, got %v", err)
		}
	}, m)
}
