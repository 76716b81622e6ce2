package main

import (
	"bytes"
	"regexp"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// FileManager's tasks (DeleteDatastoreFile_Task, MoveDatastoreFile_Task, CopyDatastoreFile_Task) with a
// task whose info.entity is a managed entity. 0.24.2 makes them with the FileManager itself as the
// entity, which is not a ManagedEntity: pyVmomi then cannot read the task's info at all ("For entity
// expected type vim.ManagedEntity, but got vim.FileManager"), so no client can wait for them. A real
// host names its datacenter there. The simulator's FileManager cannot be replaced (the simulator
// type-asserts it), so in ESX mode the front routes these calls to a fileTasks object, registered under
// the moref type "AgentvmFileTasks" (the pattern of maintenance.go), which lets the FileManager run the
// task and then sets the task's entity to the datacenter of the request (ha-datacenter when it names
// none). MakeDirectory needs nothing: with createParentDirectories false it is one os.Mkdir, refused
// with FileAlreadyExists when the directory exists, atomically (the kernel's mkdir), which is what the
// solution's lease on a standalone host relies on (file_tasks_test.go checks both).

const fileTasksType = "AgentvmFileTasks"

var reFileTask = regexp.MustCompile(
	`(?s)(<(?:DeleteDatastoreFile_Task|MoveDatastoreFile_Task|CopyDatastoreFile_Task)\b[^>]*>\s*<_this\b[^>]*?type=")(FileManager)("[^>]*>)([^<]*)(</_this>)`)

type fileTasks struct {
	self types.ManagedObjectReference
}

func (f *fileTasks) Reference() types.ManagedObjectReference { return f.self }

// routeFileTasks rewrites the _this of a FileManager task call to the fileTasks object; it returns the
// body and the routed type ("" when nothing was routed).
func routeFileTasks(body []byte) ([]byte, string) {
	m := reFileTask.FindSubmatchIndex(body)
	if m == nil {
		return body, ""
	}
	self := types.ManagedObjectReference{Type: fileTasksType, Value: string(body[m[8]:m[9]])}
	dvPortsMu.Lock()
	if simulator.Map.Get(self) == nil {
		simulator.Map.Put(&fileTasks{self: self})
	}
	dvPortsMu.Unlock()
	var b bytes.Buffer
	b.Write(body[:m[4]])
	b.WriteString(fileTasksType)
	b.Write(body[m[5]:])
	return b.Bytes(), fileTasksType
}

// withDatacenterEntity sets the entity of the task “ref“ to “dc“ (nil: the ESX model's datacenter).
func withDatacenterEntity(ref types.ManagedObjectReference, dc *types.ManagedObjectReference) {
	task, ok := simulator.Map.Get(ref).(*simulator.Task)
	if !ok {
		return
	}
	entity := esx.Datacenter.Self
	if dc != nil {
		entity = *dc
	}
	name := entity.Value
	if e, ok := simulator.Map.Get(entity).(mo.Entity); ok {
		name = e.Entity().Name
	}
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.entity", Val: &entity},
		{Name: "info.entityName", Val: name},
	})
}

func (f *fileTasks) DeleteDatastoreFileTask(req *types.DeleteDatastoreFile_Task) soap.HasFault {
	req.This = simulator.Map.FileManager().Self
	res := simulator.Map.FileManager().DeleteDatastoreFileTask(req)
	if body, ok := res.(*methods.DeleteDatastoreFile_TaskBody); ok && body.Res != nil {
		withDatacenterEntity(body.Res.Returnval, req.Datacenter)
	}
	return res
}

func (f *fileTasks) MoveDatastoreFileTask(req *types.MoveDatastoreFile_Task) soap.HasFault {
	req.This = simulator.Map.FileManager().Self
	res := simulator.Map.FileManager().MoveDatastoreFileTask(req)
	if body, ok := res.(*methods.MoveDatastoreFile_TaskBody); ok && body.Res != nil {
		withDatacenterEntity(body.Res.Returnval, req.SourceDatacenter)
	}
	return res
}

func (f *fileTasks) CopyDatastoreFileTask(req *types.CopyDatastoreFile_Task) soap.HasFault {
	req.This = simulator.Map.FileManager().Self
	res := simulator.Map.FileManager().CopyDatastoreFileTask(req)
	if body, ok := res.(*methods.CopyDatastoreFile_TaskBody); ok && body.Res != nil {
		withDatacenterEntity(body.Res.Returnval, req.SourceDatacenter)
	}
	return res
}
