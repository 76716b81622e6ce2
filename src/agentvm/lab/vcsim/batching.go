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
// grew (the lab's EAM and the controller hung). This collector instead notes what changed and reports
// the difference from what it reported before: enter for new objects, modify with the changed properties
// (remove for a property that became unset), leave for objects gone. When only objects it already
// reported changed (a power-off, a rename), it retrieves just those objects (every property the filters
// ask for, at most every 50 ms), so an answer costs the changes, not the filter's size; when the set of
// objects may have changed (an object of a type its filters select or traverse created, removed, or
// updated before it was reported; a traversed object or a container view updated), it retrieves each
// filter whole, at most every 250 ms. Other methods (CreateFilter, RetrievePropertiesEx, ...) are 0.24.2's.
type batchingCollector struct {
	simulator.PropertyCollector // first field: the simulator finds the mo type by walking first fields

	mu        sync.Mutex
	dirty     bool                                  // the filters' objects may have changed: retrieve them whole
	touched   map[types.ManagedObjectReference]bool // reported objects updated since: retrieve just them
	types     map[string]bool                       // object types whose changes may change a filter's result
	traversed map[string]bool                       // of those, the types the filters traverse
	members   map[types.ManagedObjectReference]bool // the objects some filter reported
	cancel    context.CancelFunc
	known     map[types.ManagedObjectReference]map[types.ManagedObjectReference]map[string]types.AnyType
	seq       int
	wholeAt   time.Time // when the last whole retrieve began
}

// changed notes a change of ref; update: only its properties changed (not created or removed).
func (pc *batchingCollector) changed(ref types.ManagedObjectReference, update bool) {
	pc.mu.Lock()
	switch {
	case update && pc.members[ref] && !pc.traversed[ref.Type]:
		if pc.touched == nil {
			pc.touched = map[types.ManagedObjectReference]bool{}
		}
		pc.touched[ref] = true
	case ref.Type == "ContainerView" || pc.types == nil || pc.types[ref.Type]:
		pc.dirty = true
	}
	pc.mu.Unlock()
}

// PutObject, UpdateObject, RemoveObject: the registry's handlers (simulator.RegisterObject).
func (pc *batchingCollector) PutObject(o mo.Reference) { pc.changed(o.Reference(), false) }
func (pc *batchingCollector) UpdateObject(o mo.Reference, _ []types.PropertyChange) {
	pc.changed(o.Reference(), true)
}
func (pc *batchingCollector) RemoveObject(ref types.ManagedObjectReference) { pc.changed(ref, false) }

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

// diff returns what changed since the last call (all of it as enter when reset): with touched nil, it
// retrieves every filter whole; otherwise only the touched objects each filter reported before (their
// properties changed, the set of objects did not). A filter destroyed meanwhile is skipped.
func (pc *batchingCollector) diff(ctx *simulator.Context, reset bool, touched map[types.ManagedObjectReference]bool) ([]types.PropertyFilterUpdate, types.BaseMethodFault) {
	pc.mu.Lock()
	if reset || pc.known == nil {
		pc.known = map[types.ManagedObjectReference]map[types.ManagedObjectReference]map[string]types.AnyType{}
	}
	filters := append([]types.ManagedObjectReference(nil), pc.Filter...)
	pc.mu.Unlock()

	kinds, traversed := map[string]bool{}, map[string]bool{}
	var updates []types.PropertyFilterUpdate
	for _, ref := range filters {
		filter, ok := ctx.Session.Get(ref).(*simulator.PropertyFilter)
		if !ok {
			continue
		}
		for _, ps := range filter.Spec.PropSet {
			kinds[ps.Type] = true
		}
		for _, os := range filter.Spec.ObjectSet {
			for _, sel := range os.SelectSet {
				if ts, ok := sel.(*types.TraversalSpec); ok {
					kinds[ts.Type], traversed[ts.Type] = true, true
				}
			}
		}
		before := pc.known[ref]
		spec := filter.Spec
		if touched != nil {
			spec = types.PropertyFilterSpec{PropSet: filter.Spec.PropSet}
			for obj := range touched {
				// one removed since is left to the whole retrieve its removal asks for
				if _, ok := before[obj]; ok && ctx.Map.Get(obj) != nil {
					spec.ObjectSet = append(spec.ObjectSet, types.ObjectSpec{Obj: obj})
				}
			}
			if len(spec.ObjectSet) == 0 {
				continue
			}
		}
		res := pc.PropertyCollector.RetrievePropertiesEx(ctx, &types.RetrievePropertiesEx{SpecSet: []types.PropertyFilterSpec{spec}})
		body := res.(*methods.RetrievePropertiesExBody)
		if body.Fault_ != nil && touched != nil {
			// an object removed meanwhile (ManagedObjectNotFound): a whole retrieve reports it gone
			pc.mu.Lock()
			pc.dirty, pc.wholeAt = true, time.Time{}
			pc.mu.Unlock()
			continue
		}
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
		fu := types.PropertyFilterUpdate{Filter: ref}
		if touched != nil {
			// the others are as reported
			for obj, props := range before {
				if _, ok := now[obj]; !ok {
					now[obj] = props
				}
			}
		}
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
	if touched == nil {
		members := map[types.ManagedObjectReference]bool{}
		for _, objs := range pc.known {
			for obj := range objs {
				members[obj] = true
			}
		}
		pc.mu.Lock()
		pc.types, pc.traversed, pc.members = kinds, traversed, members
		pc.mu.Unlock()
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
		pc.mu.Lock()
		pc.wholeAt = time.Now()
		pc.mu.Unlock()
		updates, fault := pc.diff(ctx, true, nil)
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

	// let changes accumulate, as 0.24.2 does: answers of a few changed objects are cheap and come every
	// 50 ms; a whole retrieve (its cost grows with the filters) at most every 250 ms, except in a check
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	for {
		pc.mu.Lock()
		dirty := pc.dirty && (once || time.Since(pc.wholeAt) >= 250*time.Millisecond)
		touched := pc.touched
		pc.touched = nil
		if dirty {
			pc.dirty, pc.wholeAt = false, time.Now()
			touched = nil // a whole retrieve covers the touched objects too
		}
		pc.mu.Unlock()
		if dirty || touched != nil {
			updates, fault := pc.diff(ctx, false, touched)
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
