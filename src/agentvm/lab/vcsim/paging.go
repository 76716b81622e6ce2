package main

import (
	"fmt"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Paging: 0.24.2's RetrievePropertiesEx ignores options.maxObjects and has no Continue/Cancel. A real
// vCenter pages, and agentvm's reads must prove they follow tokens and always cancel cursors.

// The simulator makes a zero-valued copy of this type per session (reflect.New), so the collector is
// embedded by value (it finds an object's mo type by walking first fields) and the cursors live in one
// shared pager.
type pagingCollector struct {
	simulator.PropertyCollector
}

// CreatePropertyCollector hands out a batchingCollector instead of 0.24.2's own (see below).
func (p *pagingCollector) CreatePropertyCollector(ctx *simulator.Context, c *types.CreatePropertyCollector) soap.HasFault {
	pc := &batchingCollector{}
	pc.Self.Type = "PropertyCollector" // otherwise the reference's type would be the Go type's name
	return &methods.CreatePropertyCollectorBody{
		Res: &types.CreatePropertyCollectorResponse{Returnval: ctx.Session.Put(pc).Reference()},
	}
}

type pager struct {
	mu    sync.Mutex
	pages map[string][]types.ObjectContent // token -> the objects not yet returned
	sizes map[string]int                   // token -> page size asked for by the first call
	seq   int
}

var cursors = &pager{pages: map[string][]types.ObjectContent{}, sizes: map[string]int{}}

func (p *pager) page(objects []types.ObjectContent, max int) *types.RetrieveResult {
	res := &types.RetrieveResult{Objects: objects}
	if max <= 0 || len(objects) <= max {
		return res
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	token := fmt.Sprintf("page-%d", p.seq)
	p.pages[token] = objects[max:]
	p.sizes[token] = max
	res.Objects = objects[:max]
	res.Token = token
	return res
}

// take removes a cursor and returns what it still held.
func (p *pager) take(token string) ([]types.ObjectContent, int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rest, ok := p.pages[token]
	size := p.sizes[token]
	delete(p.pages, token)
	delete(p.sizes, token)
	return rest, size, ok
}

func (p *pagingCollector) RetrievePropertiesEx(ctx *simulator.Context, r *types.RetrievePropertiesEx) soap.HasFault {
	res := p.PropertyCollector.RetrievePropertiesEx(ctx, r)
	body, ok := res.(*methods.RetrievePropertiesExBody)
	if !ok || body.Res == nil || body.Res.Returnval == nil {
		return res
	}
	body.Res.Returnval = cursors.page(body.Res.Returnval.Objects, int(r.Options.MaxObjects))
	return body
}

func (p *pagingCollector) ContinueRetrievePropertiesEx(r *types.ContinueRetrievePropertiesEx) soap.HasFault {
	body := new(methods.ContinueRetrievePropertiesExBody)
	rest, size, ok := cursors.take(r.Token)
	if !ok {
		body.Fault_ = simulator.Fault("unknown or finished token "+r.Token, &types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	body.Res = &types.ContinueRetrievePropertiesExResponse{Returnval: *cursors.page(rest, size)}
	return body
}

func (p *pagingCollector) CancelRetrievePropertiesEx(r *types.CancelRetrievePropertiesEx) soap.HasFault {
	body := new(methods.CancelRetrievePropertiesExBody)
	if _, _, ok := cursors.take(r.Token); !ok {
		body.Fault_ = simulator.Fault("unknown or finished token "+r.Token, &types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	body.Res = new(types.CancelRetrievePropertiesExResponse)
	return body
}
