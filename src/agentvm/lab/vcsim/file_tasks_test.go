package main

import (
	"context"
	"sync"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// the host's datastore name, as its FileManager resolves "[name] path"
func esxDatastore(t *testing.T) string {
	t.Helper()
	for _, e := range simulator.Map.All("Datastore") {
		if ds, ok := e.(*simulator.Datastore); ok {
			return ds.Name
		}
	}
	t.Fatal("the host has no datastore")
	return ""
}

func TestMakeDirectoryWithoutParentsIsRefusedWhenItExistsAndOneOfManyWins(t *testing.T) {
	ctx := context.Background()
	c, _, _ := servedESX(ctx, t)
	fm := object.NewFileManager(c.Client)
	ds := esxDatastore(t)
	if err := fm.MakeDirectory(ctx, "["+ds+"] .agentvm", nil, true); err != nil {
		t.Fatal(err)
	}
	const contenders = 16
	var wg sync.WaitGroup
	errs := make([]error, contenders)
	for i := 0; i < contenders; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = fm.MakeDirectory(ctx, "["+ds+"] .agentvm/k.lease.7", nil, false)
		}(i)
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
			continue
		}
		if _, ok := soap.ToSoapFault(err).VimFault().(types.FileAlreadyExists); !ok {
			t.Errorf("a losing MakeDirectory failed with %v, want FileAlreadyExists", err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d MakeDirectory calls succeeded, want exactly 1", won, contenders)
	}
	err := fm.MakeDirectory(ctx, "["+ds+"] .missing/k.lease.1", nil, false)
	if _, ok := soap.ToSoapFault(err).VimFault().(types.FileNotFound); err == nil || !ok {
		t.Errorf("MakeDirectory under a missing parent: %v, want FileNotFound", err)
	}
}

func TestFileManagerTasksNameTheDatacenterAsTheirEntity(t *testing.T) {
	ctx := context.Background()
	c, _, _ := servedESX(ctx, t)
	fm := object.NewFileManager(c.Client)
	ds := esxDatastore(t)
	for _, dir := range []string{"a", "b"} {
		if err := fm.MakeDirectory(ctx, "["+ds+"] "+dir, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	move, err := methods.MoveDatastoreFile_Task(ctx, c.Client, &types.MoveDatastoreFile_Task{
		This: fm.Reference(), SourceName: "[" + ds + "] a", DestinationName: "[" + ds + "] c", Force: types.NewBool(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	remove, err := methods.DeleteDatastoreFile_Task(ctx, c.Client, &types.DeleteDatastoreFile_Task{
		This: fm.Reference(), Name: "[" + ds + "] b",
	})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := methods.DeleteDatastoreFile_Task(ctx, c.Client, &types.DeleteDatastoreFile_Task{
		This: fm.Reference(), Name: "[" + ds + "] b",
	})
	if err != nil {
		t.Fatal(err)
	}
	pc := property.DefaultCollector(c.Client)
	for name, ref := range map[string]types.ManagedObjectReference{
		"move": move.Returnval, "delete": remove.Returnval, "delete again": gone.Returnval} {
		var task mo.Task
		if err := pc.RetrieveOne(ctx, ref, []string{"info"}, &task); err != nil {
			t.Fatal(err)
		}
		if task.Info.Entity == nil || task.Info.Entity.Type != "Datacenter" || task.Info.EntityName != "ha-datacenter" {
			t.Errorf("%s task: entity %v (%q), want the datacenter ha-datacenter", name, task.Info.Entity, task.Info.EntityName)
		}
		wantState := types.TaskInfoStateSuccess
		if name == "delete again" {
			wantState = types.TaskInfoStateError
		}
		if task.Info.State != wantState {
			t.Errorf("%s task: state %s (%v), want %s", name, task.Info.State, task.Info.Error, wantState)
		}
	}
}
