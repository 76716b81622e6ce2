package main

import (
	"context"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// watchVMs creates a property collector (the root collector hands out a batchingCollector) with one filter
// on the name of every VM, and returns it.
func watchVMs(ctx context.Context, t *testing.T, c *vim25.Client) types.ManagedObjectReference {
	t.Helper()
	created, err := methods.CreatePropertyCollector(ctx, c, &types.CreatePropertyCollector{This: c.ServiceContent.PropertyCollector})
	if err != nil {
		t.Fatalf("CreatePropertyCollector: %v", err)
	}
	pc := created.Returnval
	v := containerView(ctx, t, c, "VirtualMachine")
	if _, err := methods.CreateFilter(ctx, c, &types.CreateFilter{This: pc, Spec: viewSpec(v, "VirtualMachine", "name")}); err != nil {
		t.Fatalf("CreateFilter: %v", err)
	}
	return pc
}

func waitEx(ctx context.Context, c *vim25.Client, pc types.ManagedObjectReference, version string, maxWait int32) (*types.UpdateSet, error) {
	res, err := methods.WaitForUpdatesEx(ctx, c, &types.WaitForUpdatesEx{
		This: pc, Version: version, Options: &types.WaitOptions{MaxWaitSeconds: &maxWait},
	})
	if err != nil {
		return nil, err
	}
	return res.Returnval, nil
}

// objectUpdates returns every object update of set by object.
func objectUpdates(set *types.UpdateSet) map[types.ManagedObjectReference]types.ObjectUpdate {
	updates := map[types.ManagedObjectReference]types.ObjectUpdate{}
	if set == nil {
		return updates
	}
	for _, fu := range set.FilterSet {
		for _, ou := range fu.ObjectSet {
			updates[ou.Obj] = ou
		}
	}
	return updates
}

func TestWaitForUpdatesExReportsEnterThenEachChangeOnceThenLeave(t *testing.T) {
	m := simulator.VPX()
	m.Cluster, m.ClusterHost, m.Host, m.Machine = 1, 2, 0, 2
	extended(t, m)
	simulator.Test(func(ctx context.Context, c *vim25.Client) {
		pc := watchVMs(ctx, t, c)
		vms := names("VirtualMachine")

		first, err := waitEx(ctx, c, pc, "", 10)
		if err != nil {
			t.Fatalf("the first WaitForUpdatesEx: %v", err)
		}
		entered := objectUpdates(first)
		if len(entered) != len(vms) {
			t.Fatalf("want an enter for each of the %d VMs, got %d updates", len(vms), len(entered))
		}
		for name, ref := range vms {
			ou := entered[ref]
			if ou.Kind != types.ObjectUpdateKindEnter || len(ou.ChangeSet) != 1 || ou.ChangeSet[0].Val != name {
				t.Errorf("VM %s: want enter with its name, got %+v", name, ou)
			}
		}

		// nothing changed: a check (maxWaitSeconds 0) returns no update set
		if set, err := waitEx(ctx, c, pc, first.Version, 0); err != nil || set != nil {
			t.Fatalf("nothing changed: want no update set, got %+v, %v", set, err)
		}

		var renamed, destroyed types.ManagedObjectReference
		for _, ref := range vms {
			if renamed.Value == "" {
				renamed = ref
			} else if destroyed.Value == "" {
				destroyed = ref
			}
		}
		// two renames before the next wait: reported once, as the difference from what was reported before
		for _, name := range []string{"renamed-once", "renamed-twice"} {
			task, err := object.NewVirtualMachine(c, renamed).Rename(ctx, name)
			if err == nil {
				err = task.Wait(ctx)
			}
			if err != nil {
				t.Fatalf("renaming: %v", err)
			}
		}
		second, err := waitEx(ctx, c, pc, first.Version, 10)
		if err != nil {
			t.Fatalf("WaitForUpdatesEx after the renames: %v", err)
		}
		if n := len(second.FilterSet); n != 1 || len(second.FilterSet[0].ObjectSet) != 1 {
			t.Fatalf("want one object update, got %+v", second)
		}
		ou := second.FilterSet[0].ObjectSet[0]
		if ou.Obj != renamed || ou.Kind != types.ObjectUpdateKindModify || len(ou.ChangeSet) != 1 ||
			ou.ChangeSet[0].Name != "name" || ou.ChangeSet[0].Val != "renamed-twice" {
			t.Fatalf("want one modify of the renamed VM's name to its last one, got %+v", ou)
		}

		vm := object.NewVirtualMachine(c, destroyed)
		if task, err := vm.PowerOff(ctx); err == nil {
			_ = task.Wait(ctx)
		}
		task, err := vm.Destroy(ctx)
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			t.Fatalf("destroying: %v", err)
		}
		third, err := waitEx(ctx, c, pc, second.Version, 10)
		if err != nil {
			t.Fatalf("WaitForUpdatesEx after the destroy: %v", err)
		}
		left := objectUpdates(third)
		if ou, ok := left[destroyed]; len(left) != 1 || !ok || ou.Kind != types.ObjectUpdateKindLeave {
			t.Fatalf("want one leave of the destroyed VM, got %+v", third)
		}
	}, m)
}

func TestCancelWaitForUpdatesEndsAWaitWithRequestCanceled(t *testing.T) {
	m := simulator.VPX()
	m.Cluster, m.ClusterHost, m.Host, m.Machine = 1, 1, 0, 1
	extended(t, m)
	simulator.Test(func(ctx context.Context, c *vim25.Client) {
		pc := watchVMs(ctx, t, c)
		first, err := waitEx(ctx, c, pc, "", 10)
		if err != nil {
			t.Fatalf("the first WaitForUpdatesEx: %v", err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := waitEx(ctx, c, pc, first.Version, 60)
			done <- err
		}()
		// CancelWaitForUpdates cancels the wait in progress only: repeat until the wait has begun and ended
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := methods.CancelWaitForUpdates(ctx, c, &types.CancelWaitForUpdates{This: pc}); err != nil {
				t.Fatalf("CancelWaitForUpdates: %v", err)
			}
			select {
			case err := <-done:
				if _, ok := faultOf(err).(types.RequestCanceled); !ok {
					t.Fatalf("want RequestCanceled, got %v", err)
				}
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		t.Fatal("the wait did not end within 10 s of CancelWaitForUpdates")
	}, m)
}

func TestWaitForUpdatesExReportsAReconfiguredVMsManagedByAlone(t *testing.T) {
	m := simulator.VPX()
	m.Cluster, m.ClusterHost, m.Host, m.Machine = 1, 2, 0, 2
	extended(t, m)
	simulator.Test(func(ctx context.Context, c *vim25.Client) {
		created, err := methods.CreatePropertyCollector(ctx, c, &types.CreatePropertyCollector{This: c.ServiceContent.PropertyCollector})
		if err != nil {
			t.Fatalf("CreatePropertyCollector: %v", err)
		}
		pc := created.Returnval
		v := containerView(ctx, t, c, "VirtualMachine")
		if _, err := methods.CreateFilter(ctx, c, &types.CreateFilter{This: pc, Spec: viewSpec(v, "VirtualMachine", "name", "config.managedBy")}); err != nil {
			t.Fatalf("CreateFilter: %v", err)
		}
		first, err := waitEx(ctx, c, pc, "", 10)
		if err != nil {
			t.Fatalf("the first WaitForUpdatesEx: %v", err)
		}
		var target types.ManagedObjectReference
		for _, ref := range names("VirtualMachine") {
			target = ref
			break
		}
		// a property changed on an object reported before: the answer retrieves that object alone
		owner := types.ManagedByInfo{ExtensionKey: "com.example.owner", Type: "agent"}
		task, err := object.NewVirtualMachine(c, target).Reconfigure(ctx, types.VirtualMachineConfigSpec{ManagedBy: &owner})
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			t.Fatalf("reconfiguring: %v", err)
		}
		second, err := waitEx(ctx, c, pc, first.Version, 10)
		if err != nil {
			t.Fatalf("WaitForUpdatesEx after the reconfigure: %v", err)
		}
		updates := objectUpdates(second)
		ou, ok := updates[target]
		if len(updates) != 1 || !ok || ou.Kind != types.ObjectUpdateKindModify || len(ou.ChangeSet) != 1 ||
			ou.ChangeSet[0].Name != "config.managedBy" {
			t.Fatalf("want one modify of the reconfigured VM's config.managedBy, got %+v", second)
		}
		if got, _ := ou.ChangeSet[0].Val.(types.ManagedByInfo); got != owner {
			t.Fatalf("want managedBy %+v, got %+v", owner, ou.ChangeSet[0].Val)
		}
	}, m)
}
