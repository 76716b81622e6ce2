package main

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// WaitForUpdatesEx that stays cheap on a large inventory.
//
// 0.24.2's collector re-runs its filters' whole retrieve once for EVERY object change in the simulator
// (tasks, task manager, events, views included), to find objects that entered the filter: a watch on all
// hosts and VMs of a 2,500-host lab costs updates x 2,500 objects, so a deploy (thousands of task
// updates) made one WaitForUpdatesEx last minutes, past the client's HTTP timeout, and the backlog only
// grew (the lab's EAM and the controller hung). This collector instead notes that something relevant
// changed (an object of a type its filters select or traverse, or a container view) and, at most every
// 250 ms, retrieves each filter once and reports the difference from what it reported before: enter for
// new objects, modify with the changed properties (remove for a property that became unset), leave for
// objects gone. Other methods (CreateFilter, RetrievePropertiesEx, ...) are 0.24.2's.
type batchingCollector struct {
	simulator.PropertyCollector // first field: the simulator finds the mo type by walking first fields

	mu     sync.Mutex
	dirty  bool
	types  map[string]bool // object types whose changes may change a filter's result
	cancel context.CancelFunc
	known  map[types.ManagedObjectReference]map[types.ManagedObjectReference]map[string]types.AnyType
	seq    int
}

func (pc *batchingCollector) changed(kind string) {
	pc.mu.Lock()
	if kind == "ContainerView" || pc.types[kind] {
		pc.dirty = true
	}
	pc.mu.Unlock()
}

// PutObject, UpdateObject, RemoveObject: the registry's handlers (simulator.RegisterObject).
func (pc *batchingCollector) PutObject(o mo.Reference) { pc.changed(o.Reference().Type) }
func (pc *batchingCollector) UpdateObject(o mo.Reference, _ []types.PropertyChange) {
	pc.changed(o.Reference().Type)
}
func (pc *batchingCollector) RemoveObject(ref types.ManagedObjectReference) { pc.changed(ref.Type) }

func (pc *batchingCollector) CancelWaitForUpdates(r *types.CancelWaitForUpdates) soap.HasFault {
	pc.mu.Lock()
	if pc.cancel != nil {
		pc.cancel()
	}
	pc.mu.Unlock()
	return &methods.CancelWaitForUpdatesBody{Res: new(types.CancelWaitForUpdatesResponse)}
}

func (pc *batchingCollector) DestroyPropertyCollector(ctx *simulator.Context, c *types.DestroyPropertyCollector) soap.HasFault {
	pc.CancelWaitForUpdates(&types.CancelWaitForUpdates{This: c.This})
	return pc.PropertyCollector.DestroyPropertyCollector(ctx, c) // also removes the registry handler
}

// diff retrieves every filter once and returns what changed since the last call (all of it as enter
// when reset). A filter destroyed meanwhile is skipped.
func (pc *batchingCollector) diff(ctx *simulator.Context, reset bool) ([]types.PropertyFilterUpdate, types.BaseMethodFault) {
	pc.mu.Lock()
	if reset || pc.known == nil {
		pc.known = map[types.ManagedObjectReference]map[types.ManagedObjectReference]map[string]types.AnyType{}
	}
	pc.types = map[string]bool{}
	filters := append([]types.ManagedObjectReference(nil), pc.Filter...)
	pc.mu.Unlock()

	var updates []types.PropertyFilterUpdate
	for _, ref := range filters {
		filter, ok := ctx.Session.Get(ref).(*simulator.PropertyFilter)
		if !ok {
			continue
		}
		pc.mu.Lock()
		for _, ps := range filter.Spec.PropSet {
			pc.types[ps.Type] = true
		}
		for _, os := range filter.Spec.ObjectSet {
			for _, sel := range os.SelectSet {
				if ts, ok := sel.(*types.TraversalSpec); ok {
					pc.types[ts.Type] = true
				}
			}
		}
		pc.mu.Unlock()
		res := pc.PropertyCollector.RetrievePropertiesEx(ctx, &types.RetrievePropertiesEx{SpecSet: []types.PropertyFilterSpec{filter.Spec}})
		body := res.(*methods.RetrievePropertiesExBody)
		if body.Fault_ != nil {
			return nil, body.Fault_.VimFault().(types.BaseMethodFault)
		}
		now := map[types.ManagedObjectReference]map[string]types.AnyType{}
		if body.Res != nil && body.Res.Returnval != nil {
			for _, o := range body.Res.Returnval.Objects {
				props := map[string]types.AnyType{}
				for _, p := range o.PropSet {
					props[p.Name] = p.Val
				}
				now[o.Obj] = props
			}
		}
		before := pc.known[ref]
		fu := types.PropertyFilterUpdate{Filter: ref}
		for obj, props := range now {
			old, seen := before[obj]
			ou := types.ObjectUpdate{Obj: obj, Kind: types.ObjectUpdateKindModify}
			if !seen {
				ou.Kind = types.ObjectUpdateKindEnter
			}
			for name, val := range props {
				if prev, had := old[name]; !had || !reflect.DeepEqual(prev, val) {
					ou.ChangeSet = append(ou.ChangeSet, types.PropertyChange{Name: name, Op: types.PropertyChangeOpAssign, Val: val})
				}
			}
			for name := range old {
				if _, has := props[name]; !has {
					ou.ChangeSet = append(ou.ChangeSet, types.PropertyChange{Name: name, Op: types.PropertyChangeOpRemove})
				}
			}
			if !seen || len(ou.ChangeSet) > 0 {
				fu.ObjectSet = append(fu.ObjectSet, ou)
			}
		}
		for obj := range before {
			if _, ok := now[obj]; !ok {
				fu.ObjectSet = append(fu.ObjectSet, types.ObjectUpdate{Obj: obj, Kind: types.ObjectUpdateKindLeave})
			}
		}
		pc.known[ref] = now
		if len(fu.ObjectSet) > 0 {
			updates = append(updates, fu)
		}
	}
	return updates, nil
}

// WaitForUpdatesEx: version "" reports everything (enter) at once; any other version waits, up to
// maxWaitSeconds (0: check once), for the next difference (nil on timeout, RequestCanceled on cancel).
func (pc *batchingCollector) WaitForUpdatesEx(ctx *simulator.Context, r *types.WaitForUpdatesEx) soap.HasFault {
	body := &methods.WaitForUpdatesExBody{}
	fail := func(fault types.BaseMethodFault) soap.HasFault {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	reply := func(updates []types.PropertyFilterUpdate) soap.HasFault {
		pc.mu.Lock()
		pc.seq++
		version := fmt.Sprint(pc.seq)
		pc.mu.Unlock()
		body.Res = &types.WaitForUpdatesExResponse{Returnval: &types.UpdateSet{Version: version, FilterSet: updates}}
		return body
	}
	if r.Version == "" {
		ctx.Map.AddHandler(pc) // from now on, note relevant changes (before the read: none is lost)
		updates, fault := pc.diff(ctx, true)
		if fault != nil {
			return fail(fault)
		}
		return reply(updates)
	}

	wait, cancel := context.WithCancel(context.Background())
	once := false
	if r.Options != nil && r.Options.MaxWaitSeconds != nil {
		once = *r.Options.MaxWaitSeconds == 0
		if *r.Options.MaxWaitSeconds > 0 {
			wait, cancel = context.WithTimeout(context.Background(), time.Second*time.Duration(*r.Options.MaxWaitSeconds))
		}
	}
	defer cancel()
	pc.mu.Lock()
	pc.cancel = cancel
	pc.mu.Unlock()

	ticker := time.NewTicker(250 * time.Millisecond) // let changes accumulate, as 0.24.2 does
	defer ticker.Stop()
	for {
		pc.mu.Lock()
		dirty := pc.dirty
		pc.dirty = false
		pc.mu.Unlock()
		if dirty {
			updates, fault := pc.diff(ctx, false)
			if fault != nil {
				return fail(fault)
			}
			if len(updates) > 0 {
				return reply(updates)
			}
		}
		if once {
			body.Res = &types.WaitForUpdatesExResponse{}
			return body
		}
		select {
		case <-wait.Done():
			if wait.Err() == context.Canceled {
				return fail(new(types.RequestCanceled))
			}
			body.Res = &types.WaitForUpdatesExResponse{} // maxWaitSeconds elapsed: no update set
			return body
		case <-ticker.C:
		}
	}
}
